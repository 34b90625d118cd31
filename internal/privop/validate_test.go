package privop

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidateRefuses(t *testing.T) {
	fw := func(mod func(*ApplyFirewall)) ApplyFirewall {
		o := ApplyFirewall{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1", DNSPorts: []int{53}}
		mod(&o)
		return o
	}
	tests := []struct {
		name string
		op   Op
		want string // substring of the error
	}{
		{"bridge without banger prefix", EnsureBridge{Bridge: "docker0", Gateway: "172.16.0.1/24", MTU: 1500}, "not a banger bridge"},
		{"bridge eth0", EnsureBridge{Bridge: "eth0", Gateway: "172.16.0.1/24", MTU: 1500}, "not a banger bridge"},
		{"bridge prefix without dash", EnsureBridge{Bridge: "br-fcx", Gateway: "172.16.0.1/24", MTU: 1500}, "not a banger bridge"},
		{"bridge 16 chars", EnsureBridge{Bridge: "br-fc-0123456789", Gateway: "172.16.0.1/24", MTU: 1500}, "not a banger bridge"},
		{"bridge uppercase", EnsureBridge{Bridge: "br-fc-A", Gateway: "172.16.0.1/24", MTU: 1500}, "not a banger bridge"},
		{"bridge with newline", EnsureBridge{Bridge: "br-fc\n", Gateway: "172.16.0.1/24", MTU: 1500}, "not a banger bridge"},
		{"prefix too short", EnsureBridge{Bridge: "br-fc", Gateway: "10.0.0.1/7", MTU: 1500}, "out of range"},
		{"prefix too long", EnsureBridge{Bridge: "br-fc", Gateway: "10.0.0.1/31", MTU: 1500}, "out of range"},
		{"public prefix", EnsureBridge{Bridge: "br-fc", Gateway: "8.8.8.1/24", MTU: 1500}, "not inside a private range"},
		{"prefix straddling private range", EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/11", MTU: 1500}, "not inside a private range"},
		{"ipv6 prefix", EnsureBridge{Bridge: "br-fc", Gateway: "fd00::1/64", MTU: 1500}, "canonical IPv4"},
		{"gateway is network address", EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.0/24", MTU: 1500}, "network address"},
		{"gateway is broadcast", EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.255/24", MTU: 1500}, "broadcast"},
		{"gateway leading zero", EnsureBridge{Bridge: "br-fc", Gateway: "172.016.0.1/24", MTU: 1500}, "prefix"},
		{"mtu too small", EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 100}, "mtu"},
		{"mtu too big", CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 65536, IP: "172.16.0.2"}, "mtu"},
		{"tap eth0", DeleteTap{Tap: "eth0"}, "not a banger tap"},
		{"tap 9 char id", OpenTap{Tap: "tap-fc-123456789"}, "not a banger tap"},
		{"tap leading dash", CreateTap{Tap: "-tap-fc-a", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.2"}, "not a banger tap"},
		{"tap path traversal", DeleteTap{Tap: "tap-fc-../x"}, "not a banger tap"},
		{"tap NUL", DeleteTap{Tap: "tap-fc-a\x00"}, "not a banger tap"},
		{"tap on eth0", CreateTap{Tap: "tap-fc-a", Bridge: "eth0", MTU: 1500}, "not a banger bridge"},
		{"tap without ip", CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 1500}, "ip: address"},
		{"tap ipv6", CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 1500, IP: "fd00::2"}, "canonical IPv4"},
		{"tap ip leading zero", CreateTap{Tap: "tap-fc-a", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.02"}, "ip: address"},
		{"firewall allow host bits", fw(func(o *ApplyFirewall) { o.Allow = []string{"10.1.2.3/24"} }), "no host bits"},
		{"firewall allow not canonical", fw(func(o *ApplyFirewall) { o.Allow = []string{"10.1.2.0/024"} }), "allow"},
		{"firewall allow v6", fw(func(o *ApplyFirewall) { o.Allow = []string{"fd00::/8"} }), "IPv4"},
		{"firewall allow everything", fw(func(o *ApplyFirewall) { o.Allow = []string{"0.0.0.0/0"} }), "every destination"},
		{"firewall allow too many", fw(func(o *ApplyFirewall) { o.Allow = slices.Repeat([]string{"10.0.0.0/8"}, MaxAllow+1) }), "at most"},
		{"firewall public subnet", fw(func(o *ApplyFirewall) { o.Subnet = "1.2.3.0/24"; o.Gateway = "1.2.3.1" }), "private range"},
		{"firewall subnet host bits", fw(func(o *ApplyFirewall) { o.Subnet = "172.16.0.1/24" }), "host bits"},
		{"firewall gateway outside", fw(func(o *ApplyFirewall) { o.Gateway = "172.17.0.1" }), "outside"},
		{"firewall port 0", fw(func(o *ApplyFirewall) { o.DNSPorts = []int{0} }), "port 0"},
		{"firewall port 65536", fw(func(o *ApplyFirewall) { o.DNSPorts = []int{65536} }), "port 65536"},
		{"firewall metadata allowed", fw(func(o *ApplyFirewall) { o.AllowHost = []string{"169.254.169.254:80"} }), "link-local"},
		{"firewall allow port 0", fw(func(o *ApplyFirewall) { o.AllowHost = []string{"10.0.0.1:0"} }), "port 0"},
		{"firewall nat outside subnet", fw(func(o *ApplyFirewall) { o.NAT = []string{"10.0.0.5"} }), "outside"},
		{"firewall nat gateway", fw(func(o *ApplyFirewall) { o.NAT = []string{"172.16.0.1"} }), "gateway"},
		{"firewall bridge eth0", fw(func(o *ApplyFirewall) { o.Bridge = "eth0" }), "not a banger bridge"},
		{"resolver bridge eth0", SyncResolverRouting{Bridge: "eth0", Server: "172.16.0.1:42069"}, "not a banger bridge"},
		{"resolver bridge without prefix", SyncResolverRouting{Bridge: "docker0", Server: "172.16.0.1:42069"}, "not a banger bridge"},
		{"resolver public server", SyncResolverRouting{Bridge: "br-fc", Server: "8.8.8.8:53"}, "not inside a private range"},
		{"resolver loopback server", SyncResolverRouting{Bridge: "br-fc", Server: "127.0.0.1:42069"}, "not inside a private range"},
		{"resolver server without port", SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1"}, "server"},
		{"resolver server port 0", SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:0"}, "port 0"},
		{"resolver server port 65536", SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:65536"}, "server"},
		{"resolver server port leading zero", SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:053"}, "canonical IPv4"},
		{"resolver server negative port", SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:-1"}, "server"},
		{"resolver server ipv6", SyncResolverRouting{Bridge: "br-fc", Server: "[fd00::1]:53"}, "canonical IPv4"},
		{"resolver server v4-mapped", SyncResolverRouting{Bridge: "br-fc", Server: "[::ffff:172.16.0.1]:53"}, "canonical IPv4"},
		{"resolver server hostname", SyncResolverRouting{Bridge: "br-fc", Server: "localhost:53"}, "server"},
		{"resolver server range network", SyncResolverRouting{Bridge: "br-fc", Server: "10.0.0.0:53"}, "network address"},
		{"resolver server range broadcast", SyncResolverRouting{Bridge: "br-fc", Server: "192.168.255.255:53"}, "broadcast"},
		{"resolver server empty", SyncResolverRouting{Bridge: "br-fc"}, "server"},
		{"resolver server with spaces", SyncResolverRouting{Bridge: "br-fc", Server: " 172.16.0.1:53"}, "server"},
		{"resolver clear eth0", ClearResolverRouting{Bridge: "eth0"}, "not a banger bridge"},
		{"resolver clear option-like", ClearResolverRouting{Bridge: "--help"}, "not a banger bridge"},
		{"suite empty", DebootstrapImage{}, "suite"},
		{"suite one char", DebootstrapImage{Suite: "b"}, "suite"},
		{"suite uppercase", DebootstrapImage{Suite: "Bookworm"}, "suite"},
		{"suite leading digit", DebootstrapImage{Suite: "1bookworm"}, "suite"},
		{"suite option-like", DebootstrapImage{Suite: "--variant=x"}, "suite"},
		{"suite path traversal", DebootstrapImage{Suite: "../etc"}, "suite"},
		{"suite slash", DebootstrapImage{Suite: "bookworm/updates"}, "suite"},
		{"suite 33 chars", DebootstrapImage{Suite: "b" + strings.Repeat("a", 32)}, "suite"},
		{"suite newline", DebootstrapImage{Suite: "bookworm\n"}, "suite"},
		{"mirror ftp", DebootstrapImage{Suite: "bookworm", Mirror: "ftp://deb.debian.org/debian"}, "http or https"},
		{"mirror file", DebootstrapImage{Suite: "bookworm", Mirror: "file:///srv/mirror"}, "http or https"},
		{"mirror option-like", DebootstrapImage{Suite: "bookworm", Mirror: "--keyring=/x"}, "http or https"},
		{"mirror bare path", DebootstrapImage{Suite: "bookworm", Mirror: "/srv/mirror"}, "http or https"},
		{"mirror space", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/deb ian"}, "space or control"},
		{"mirror tab", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/\tdebian"}, "space or control"},
		{"mirror newline", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/debian\n"}, "space or control"},
		{"mirror NUL", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/\x00"}, "space or control"},
		{"mirror DEL", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/\x7f"}, "space or control"},
		{"mirror invalid utf8", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/\xff"}, "UTF-8"},
		{"mirror too long", DebootstrapImage{Suite: "bookworm", Mirror: "http://deb.debian.org/" + strings.Repeat("a", 491)}, "at most 512"},
		{"mirror without host", DebootstrapImage{Suite: "bookworm", Mirror: "http:///debian"}, "host"},
		{"mirror with user info", DebootstrapImage{Suite: "bookworm", Mirror: "https://u:p@deb.debian.org/debian"}, "user info"},
		{"mirror uppercase scheme", DebootstrapImage{Suite: "bookworm", Mirror: "HTTP://deb.debian.org/debian"}, "http or https"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op.Validate()
			if err == nil {
				t.Fatalf("Validate(%+v) accepted it", tc.op)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate(%+v) = %q, want it to mention %q", tc.op, err, tc.want)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, op := range []Op{
		Ping{}, ClearFirewall{},
		EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500},
		EnsureBridge{Bridge: "br-fc-123456789", Gateway: "100.64.0.1/10", MTU: 9000},
		EnsureBridge{Bridge: "br-fc-t", Gateway: "10.1.2.3/8", MTU: 576},
		EnsureBridge{Bridge: "br-fc", Gateway: "192.168.7.1/30", MTU: 1500},
		CreateTap{Tap: "tap-fc-12345678", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.2"},
		DeleteTap{Tap: "tap-fc-a"}, OpenTap{Tap: "tap-fc-0"}, DeleteBridge{Bridge: "br-fc-x"},
		SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:42069"},
		SyncResolverRouting{Bridge: "br-fc-x", Server: "10.1.2.3:53"},
		SyncResolverRouting{Bridge: "br-fc", Server: "100.64.0.1:65535"},
		ClearResolverRouting{Bridge: "br-fc"},
		DebootstrapImage{Suite: "bookworm"}, DebootstrapImage{Suite: "bookworm-backports"},
		DebootstrapImage{Suite: "sid", Mirror: "http://deb.debian.org/debian"},
		DebootstrapImage{Suite: "b" + strings.Repeat("a", 31), Mirror: "https://mirror.example:8443/debian/"},
		DebootstrapImage{Suite: "trixie", Mirror: "http://10.0.0.1/" + strings.Repeat("a", 496)},
		ApplyFirewall{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1", DNSPorts: []int{53, 42069},
			AllowHost: []string{"127.0.0.1:8080"}, VMToVM: true, NAT: []string{"172.16.0.2", "172.16.0.254"},
			Allow: []string{"10.1.2.0/24", "192.168.1.10/32", "169.254.0.0/16"}},
	} {
		if err := op.Validate(); err != nil {
			t.Errorf("Validate(%#v) = %v, want nil", op, err)
		}
	}
}

func TestCheckPath(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	must(t, os.MkdirAll(filepath.Join(root, "jail", "a"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "file"), nil, 0o600))
	must(t, os.Symlink("/etc", filepath.Join(root, "link")))
	must(t, os.Symlink(filepath.Join(root, "jail"), filepath.Join(base, "rootlink")))
	roots := []string{root}

	ok := []string{
		root,
		filepath.Join(root, "jail", "a"),
		filepath.Join(root, "file"),
		filepath.Join(root, "jail", "new", "deeper"), // not yet created
	}
	for _, p := range ok {
		if err := CheckPath(roots, p); err != nil {
			t.Errorf("CheckPath(%q) = %v, want nil", p, err)
		}
	}
	bad := map[string]string{
		"outside roots":        "/etc/shadow",
		"sibling with prefix":  root + "x/y",
		"dotdot":               root + "/jail/../../etc",
		"relative":             "jail/a",
		"trailing slash":       root + "/jail/",
		"empty":                "",
		"NUL":                  root + "/a\x00b",
		"through a symlink":    filepath.Join(root, "link", "passwd"),
		"the symlink itself":   filepath.Join(root, "link"),
		"under a regular file": filepath.Join(root, "file", "x"),
	}
	for name, p := range bad {
		if err := CheckPath(roots, p); err == nil {
			t.Errorf("%s: CheckPath(%q) accepted it", name, p)
		}
	}
	if err := CheckPath(roots, filepath.Join(root, "link", "x")); !errors.Is(err, ErrSymlink) {
		t.Errorf("symlink error %v does not wrap ErrSymlink", err)
	}
	// A root reached through a symlink fails closed.
	if err := CheckPath([]string{filepath.Join(base, "rootlink")}, filepath.Join(base, "rootlink", "a")); !errors.Is(err, ErrSymlink) {
		t.Errorf("root through symlink: %v, want ErrSymlink", err)
	}
	if err := CheckPath([]string{"/"}, "/etc"); err == nil {
		t.Error("CheckPath accepted / as a banger root")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDecodeRequestRefuses(t *testing.T) {
	tests := map[string]string{
		"unknown op":          `{"op":"exec","args":{"argv":["/bin/sh"]}}`,
		"unknown field":       `{"op":"delete_tap","args":{"tap":"tap-fc-a","force":true}}`,
		"unknown top field":   `{"op":"ping","args":{},"uid":0}`,
		"owner in request":    `{"op":"create_tap","args":{"tap":"tap-fc-a","bridge":"br-fc","mtu":1500,"uid":0}}`,
		"trailing data":       `{"op":"ping"}{"op":"ping"}`,
		"not an object":       `["ping"]`,
		"empty":               ``,
		"huge number":         `{"op":"create_tap","args":{"tap":"tap-fc-a","bridge":"br-fc","mtu":1e400}}`,
		"overflowing int":     `{"op":"create_tap","args":{"tap":"tap-fc-a","bridge":"br-fc","mtu":99999999999999999999}}`,
		"invalid name":        `{"op":"delete_tap","args":{"tap":"eth0"}}`,
		"args wrong type":     `{"op":"delete_tap","args":"tap-fc-a"}`,
		"debootstrap not ops": `{"op":"build_debootstrap_image","args":{"Suite":"bookworm"}}`,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			op, err := DecodeRequest([]byte(body))
			if err == nil {
				t.Fatalf("DecodeRequest(%s) = %#v, want an error", body, op)
			}
			if CodeOf(err) != CodeBadRequest {
				t.Errorf("code %s, want bad_request (%v)", CodeOf(err), err)
			}
		})
	}
	_, err := DecodeRequest([]byte(`{"op":"exec"}`))
	if err == nil || !strings.Contains(err.Error(), `unknown op "exec"`) {
		t.Errorf("unknown op error %v does not name the op", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	ops := []Op{
		Ping{}, ClearFirewall{},
		EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500},
		CreateTap{Tap: "tap-fc-1", Bridge: "br-fc", MTU: 1400, IP: "10.0.0.2"},
		OpenTap{Tap: "tap-fc-1"},
		SyncResolverRouting{Bridge: "br-fc", Server: "172.16.0.1:42069"},
		ClearResolverRouting{Bridge: "br-fc"},
		DebootstrapImage{Suite: "bookworm"}, DebootstrapImage{Suite: "bookworm-backports"},
		DebootstrapImage{Suite: "sid", Mirror: "http://deb.debian.org/debian"},
		DebootstrapImage{Suite: "b" + strings.Repeat("a", 31), Mirror: "https://mirror.example:8443/debian/"},
		DebootstrapImage{Suite: "trixie", Mirror: "http://10.0.0.1/" + strings.Repeat("a", 496)},
		ApplyFirewall{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1", DNSPorts: []int{53}, NAT: []string{"172.16.0.9"}},
	}
	for _, op := range ops {
		body, err := EncodeRequest(op)
		if err != nil {
			t.Fatalf("EncodeRequest(%#v): %v", op, err)
		}
		got, err := DecodeRequest(body)
		if err != nil {
			t.Fatalf("DecodeRequest(%s): %v", body, err)
		}
		b2, _ := EncodeRequest(got)
		if string(b2) != string(body) {
			t.Errorf("round trip: %s != %s", b2, body)
		}
	}
	if _, err := EncodeRequest(BuildDebootstrapImage{Suite: "bookworm", Out: "/a", WorkDir: "/b"}); err == nil {
		t.Error("EncodeRequest accepted an op the helper does not serve")
	}
}

func TestReadFrameRefusesOversizeWithoutReadingIt(t *testing.T) {
	hdr := make([]byte, 4)
	binary.BigEndian.PutUint32(hdr, 10<<20)
	r := &countingReader{data: append(hdr, make([]byte, 10<<20)...)}
	_, err := ReadFrame(r, MaxRequest)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadFrame = %v, want ErrFrameTooLarge", err)
	}
	if r.read > 4 {
		t.Errorf("ReadFrame read %d bytes of an oversize frame, want only the 4-byte header", r.read)
	}
}

type countingReader struct {
	data []byte
	read int
}

func (r *countingReader) Read(p []byte) (int, error) {
	n := copy(p, r.data[r.read:])
	r.read += n
	return n, nil
}

func TestAnswerRoundTrip(t *testing.T) {
	raw, err := DecodeAnswer(EncodeAnswer(PingResult{Version: "v1"}, nil))
	if err != nil || !strings.Contains(string(raw), `"version":"v1"`) {
		t.Errorf("ok answer: %s, %v", raw, err)
	}
	_, err = DecodeAnswer(EncodeAnswer(nil, Errorf(CodeForbidden, "no")))
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeForbidden || e.Message != "no" {
		t.Errorf("error answer: %v", err)
	}
	_, err = DecodeAnswer(EncodeAnswer(nil, errors.New("boom")))
	if CodeOf(err) != CodeInternal {
		t.Errorf("plain error mapped to %s, want internal", CodeOf(err))
	}
}
