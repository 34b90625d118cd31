package privop

import (
	"bytes"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

var (
	acceptedBridge = regexp.MustCompile(`^br-fc(-[a-z0-9]{1,9})?$`)
	acceptedTap    = regexp.MustCompile(`^tap-fc-[a-z0-9]{1,8}$`)
	acceptedSuite  = regexp.MustCompile(`^[a-z][a-z0-9-]{1,31}$`)
	acceptedVMID   = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// FuzzDecodeRequest feeds arbitrary bytes to the frame reader and the
// request decoder. Neither may panic; an oversize frame is refused; and
// every request that decodes is valid, names only banger devices, uses
// private prefixes and re-encodes to something that decodes to the same op.
// The seed corpus lives in testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"ping"}`))
	f.Add([]byte(`{"op":"create_tap","args":{"tap":"tap-fc-a","bridge":"br-fc","mtu":1500}}`))
	f.Add([]byte(`{"op":"sync_resolver_routing","args":{"bridge":"br-fc","server":"172.16.0.1:42069"}}`))
	f.Add([]byte(`{"op":"debootstrap_image","args":{"suite":"bookworm","mirror":"http://deb.debian.org/debian"}}`))
	f.Add([]byte(`{"op":"debootstrap_image","args":{"suite":"trixie","mirror":""}}`))
	f.Add([]byte(`{"op":"dm_snapshot_create","args":{"vm_id":"vm-1","chunk_sectors":16}}`))
	f.Add([]byte(`{"op":"dm_snapshot_remove","args":{"vm_id":"vm-1"}}`))
	f.Add([]byte(`{"op":"launch_firecracker","args":{"vm_id":"vm-1","files":[{"role":"console"},{"role":"kernel","name":"vmlinux"},{"role":"drive","name":"rootfs","read_only":true}]}}`))
	f.Add([]byte(`{"op":"cleanup_jail","args":{"vm_id":"vm-1"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ReadFrame(bytes.NewReader(data), MaxRequest); err == nil {
			if len(data) < 4 {
				t.Fatalf("ReadFrame accepted %d bytes", len(data))
			}
		} else if errors.Is(err, ErrFrameTooLarge) && len(data) >= 4 {
			if n := int(data[0])<<24 | int(data[1])<<16 | int(data[2])<<8 | int(data[3]); n <= MaxRequest {
				t.Fatalf("ReadFrame refused %d bytes as too large", n)
			}
		}
		op, err := DecodeRequest(data)
		if err != nil {
			if CodeOf(err) != CodeBadRequest {
				t.Fatalf("decode error with code %s: %v", CodeOf(err), err)
			}
			return
		}
		if err := op.Validate(); err != nil {
			t.Fatalf("decoded op fails Validate: %v", err)
		}
		checkAccepted(t, op)
		body, err := EncodeRequest(op)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", op, err)
		}
		again, err := DecodeRequest(body)
		if err != nil {
			t.Fatalf("re-decode %s: %v", body, err)
		}
		if b2, _ := EncodeRequest(again); !bytes.Equal(b2, body) {
			t.Fatalf("round trip differs: %s vs %s", b2, body)
		}
	})
}

func checkAccepted(t *testing.T, op Op) {
	t.Helper()
	bridge := func(n string) {
		if !acceptedBridge.MatchString(n) || len(n) > 15 {
			t.Fatalf("accepted bridge name %q", n)
		}
	}
	tap := func(n string) {
		if !acceptedTap.MatchString(n) || len(n) > 15 {
			t.Fatalf("accepted tap name %q", n)
		}
	}
	private := func(p netip.Prefix) {
		ok := false
		for _, r := range privateRanges {
			ok = ok || (r.Bits() <= p.Bits() && r.Contains(p.Addr()))
		}
		if !ok || p.Bits() < MinPrefixLen || p.Bits() > MaxPrefixLen || !p.Addr().Is4() {
			t.Fatalf("accepted prefix %s", p)
		}
	}
	switch o := op.(type) {
	case EnsureBridge:
		bridge(o.Bridge)
		private(o.GatewayPrefix())
	case DeleteBridge:
		bridge(o.Bridge)
	case CreateTap:
		tap(o.Tap)
		bridge(o.Bridge)
	case DeleteTap:
		tap(o.Tap)
	case OpenTap:
		tap(o.Tap)
	case ApplyFirewall:
		bridge(o.Bridge)
		s, err := o.Parse()
		if err != nil {
			t.Fatal(err)
		}
		private(s.Subnet)
		for _, p := range s.DNSPorts {
			if p == 0 {
				t.Fatal("accepted port 0")
			}
		}
	case SyncResolverRouting:
		bridge(o.Bridge)
		ap := o.ServerAddrPort()
		private(netip.PrefixFrom(ap.Addr(), 30))
		if ap.Port() == 0 || ap.String() != o.Server {
			t.Fatalf("accepted server %q", o.Server)
		}
	case ClearResolverRouting:
		bridge(o.Bridge)
	case DebootstrapImage:
		if !acceptedSuite.MatchString(o.Suite) {
			t.Fatalf("accepted suite %q", o.Suite)
		}
		if o.Mirror != "" && (len(o.Mirror) > MaxMirrorLen || strings.ContainsAny(o.Mirror, " \t\r\n\x00") ||
			!(strings.HasPrefix(o.Mirror, "http://") || strings.HasPrefix(o.Mirror, "https://"))) {
			t.Fatalf("accepted mirror %q", o.Mirror)
		}
	case LaunchFirecracker:
		if !acceptedVMID.MatchString(o.VMID) {
			t.Fatalf("accepted vm id %q", o.VMID)
		}
		if len(o.Files) < 2 || len(o.Files) > MaxRequestFiles {
			t.Fatalf("accepted %d files", len(o.Files))
		}
		for _, f := range o.Files {
			if strings.ContainsAny(f.Name, "/\x00") || f.Name == "." || f.Name == ".." {
				t.Fatalf("accepted file name %q", f.Name)
			}
		}
	case DialJail:
		if !acceptedVMID.MatchString(o.VMID) || (o.Socket != SocketAPI && o.Socket != SocketVsock) {
			t.Fatalf("accepted dial of %q in %q", o.Socket, o.VMID)
		}
	case SignalVMM:
		if !acceptedVMID.MatchString(o.VMID) || (o.Signal != SignalTerm && o.Signal != SignalKill) {
			t.Fatalf("accepted signal %q to %q", o.Signal, o.VMID)
		}
	case CleanupJail:
		if !acceptedVMID.MatchString(o.VMID) {
			t.Fatalf("accepted vm id %q", o.VMID)
		}
	case CreateSnapshot:
		if !acceptedVMID.MatchString(o.VMID) || o.ChunkSectors != 0 && (o.ChunkSectors < 8 || o.ChunkSectors > 2048) {
			t.Fatalf("accepted vm id %q, chunk %d", o.VMID, o.ChunkSectors)
		}
	case RemoveSnapshot:
		if !acceptedVMID.MatchString(o.VMID) {
			t.Fatalf("accepted vm id %q", o.VMID)
		}
	case Ping, ClearFirewall:
	default:
		t.Fatalf("decoded an op outside the closed list: %T", op)
	}
}
