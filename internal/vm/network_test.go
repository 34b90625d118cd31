package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/privop"
	"banger/internal/store"
)

// fakeHelper records the ops bangerd asks for, one line each.
type fakeHelper struct {
	ops   []string
	image string // file handed back for debootstrap_image
}

func (f *fakeHelper) Call(_ context.Context, op privop.Op) (json.RawMessage, *os.File, error) {
	if err := op.Validate(); err != nil {
		return nil, nil, err
	}
	b, _ := json.Marshal(op)
	f.ops = append(f.ops, op.Name()+" "+string(b))
	if _, ok := op.(privop.SyncResolverRouting); ok {
		return json.RawMessage(`{"applied":false,"reason":"no resolved"}`), nil, nil
	}
	if _, ok := op.(privop.DebootstrapImage); ok && f.image != "" {
		file, err := os.Open(f.image)
		return json.RawMessage(`{}`), file, err
	}
	return json.RawMessage(`{}`), nil, nil
}

func (f *fakeHelper) OpenTap(_ context.Context, tap string) (*os.File, error) {
	f.ops = append(f.ops, "open_tap "+tap)
	return os.Open(os.DevNull)
}

type fakeDNS struct{ listeners []string }

func (d *fakeDNS) Set(string, netip.Addr) error { return nil }
func (d *fakeDNS) Remove(string) bool           { return true }
func (d *fakeDNS) AddListener(a string) (netip.AddrPort, error) {
	d.listeners = append(d.listeners, a)
	return netip.ParseAddrPort(a)
}

func TestNetworkPlansHelperOps(t *testing.T) {
	fh, dns := &fakeHelper{}, &fakeDNS{}
	n, err := newNetwork(NetworkOptions{Helper: fh, DNS: dns, Bridge: "br-fc", Subnet: "172.16.0.0/24", MTU: 1500,
		VMToVM: true, DNSPort: 42069, Allow: []string{"10.1.2.0/24"}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ip, err := n.allocate([]store.VM{{GuestIP: "172.16.0.2"}})
	if err != nil || ip.String() != "172.16.0.3" {
		t.Fatalf("allocate = %v, %v", ip, err)
	}
	tap, f, err := n.setupTap(ctx, "0123456789ab", ip, true)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if tap != "tap-fc-01234567" {
		t.Fatalf("tap = %q", tap)
	}
	// For a VMM that opens the tap by name, the tap is created only.
	if _, f, err := n.setupTap(ctx, "fedcba987654", netip.MustParseAddr("172.16.0.4"), false); err != nil || f != nil {
		t.Fatalf("setupTap without open = %v, %v", f, err)
	}
	if err := n.deleteTap(ctx, "tap-fc-fedcba98"); err != nil {
		t.Fatal(err)
	}
	vms := []store.VM{
		{Name: "a", GuestIP: "172.16.0.2", NAT: true, State: api.StateRunning},
		{Name: "b", GuestIP: "172.16.0.3", NAT: false, State: api.StateRunning},
		{Name: "c", GuestIP: "172.16.0.4", NAT: true, State: api.StateStopped},
	}
	if err := n.applyFirewall(ctx, vms); err != nil {
		t.Fatal(err)
	}
	if err := n.deleteTap(ctx, tap); err != nil {
		t.Fatal(err)
	}
	n.teardown(slog.New(slog.DiscardHandler))
	got := strings.Join(fh.ops, "\n")
	want := strings.Join([]string{
		`ensure_bridge {"bridge":"br-fc","gateway":"172.16.0.1/24","mtu":1500}`,
		`sync_resolver_routing {"bridge":"br-fc","server":"172.16.0.1:42069"}`,
		`create_tap {"tap":"tap-fc-01234567","bridge":"br-fc","mtu":1500,"ip":"172.16.0.3"}`,
		`open_tap tap-fc-01234567`,
		`create_tap {"tap":"tap-fc-fedcba98","bridge":"br-fc","mtu":1500,"ip":"172.16.0.4"}`,
		`delete_tap {"tap":"tap-fc-fedcba98"}`,
		`apply_firewall {"bridge":"br-fc","subnet":"172.16.0.0/24","gateway":"172.16.0.1","dns_ports":[42069],"allow_host":[],"vm_to_vm":true,"nat":["172.16.0.2"],"allow":["10.1.2.0/24"]}`,
		`delete_tap {"tap":"tap-fc-01234567"}`,
		`clear_resolver_routing {"bridge":"br-fc"}`,
		`clear_firewall {}`,
		`delete_bridge {"bridge":"br-fc"}`,
	}, "\n")
	if got != want {
		t.Fatalf("helper ops:\n%s\nwant:\n%s", got, want)
	}
	if fmt.Sprint(dns.listeners) != "[172.16.0.1:42069]" {
		t.Fatalf("dns listeners = %v", dns.listeners)
	}
	if c := n.cmdline(ip); c != "banger.net=172.16.0.3/24,gw=172.16.0.1,mtu=1500,dns=172.16.0.1,dnsport=42069" {
		t.Fatalf("cmdline = %q", c)
	}
}

// TestDebootstrapThroughHelper: with a helper, the Debian build is the
// helper's op and the image arrives as an fd that bangerd copies.
func TestDebootstrapThroughHelper(t *testing.T) {
	dir := t.TempDir()
	src := dir + "/built.ext4"
	if err := os.WriteFile(src, []byte("pretend ext4"), 0o600); err != nil {
		t.Fatal(err)
	}
	fh := &fakeHelper{image: src}
	n, err := newNetwork(NetworkOptions{Helper: fh, Bridge: "br-fc", Subnet: "172.16.0.0/24", MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{net: n}
	out := dir + "/out.ext4"
	if err := s.debootstrap(context.Background(), "bookworm", "", out, dir, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != "pretend ext4" {
		t.Fatalf("copied image = %q, %v", got, err)
	}
	if len(fh.ops) != 1 || !strings.HasPrefix(fh.ops[0], `debootstrap_image {"suite":"bookworm"`) {
		t.Fatalf("helper ops = %v", fh.ops)
	}
}
