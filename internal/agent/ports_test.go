package agent

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agentproto"
)

// hexWord prints 4 address bytes the way the kernel does on this machine:
// as a host-order 32-bit number.
func hexWord(b []byte) string {
	return fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b))
}

func hexAddr(a netip.Addr) string {
	b := a.AsSlice()
	var s string
	for i := 0; i < len(b); i += 4 {
		s += hexWord(b[i : i+4])
	}
	return s
}

func procLine(i int, local, remote netip.AddrPort, state string, inode int) string {
	return fmt.Sprintf("%4d: %s:%04X %s:%04X %s 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0000000000000000 100 0 0 10 0",
		i, hexAddr(local.Addr()), local.Port(), hexAddr(remote.Addr()), remote.Port(), state, inode)
}

const tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"

func TestParseProcNet(t *testing.T) {
	ap := netip.MustParseAddrPort
	any4, any6 := ap("0.0.0.0:0"), ap("[::]:0")
	cases := []struct {
		name  string
		proto string
		text  string
		want  []string // "proto addr port inode"
		err   bool
	}{
		{name: "header only", proto: "tcp", text: tcpHeader + "\n"},
		{name: "empty", proto: "tcp", text: ""},
		{name: "tcp listen vs established", proto: "tcp", text: strings.Join([]string{
			tcpHeader,
			procLine(0, ap("127.0.0.1:3306"), any4, "0A", 101),
			procLine(1, ap("0.0.0.0:22"), any4, "0A", 102),
			procLine(2, ap("10.0.0.2:22"), ap("10.0.0.1:51000"), "01", 103),
			procLine(3, ap("10.0.0.2:40000"), ap("10.0.0.1:80"), "06", 104),
		}, "\n") + "\n",
			want: []string{"tcp 127.0.0.1 3306 101", "tcp 0.0.0.0 22 102"}},
		{name: "tcp6", proto: "tcp", text: tcpHeader + "\n" +
			procLine(0, ap("[::]:8080"), any6, "0A", 201) + "\n" +
			procLine(1, ap("[::1]:5432"), any6, "0A", 202) + "\n" +
			procLine(2, ap("[::ffff:127.0.0.1]:9000"), any6, "0A", 203) + "\n" +
			procLine(3, ap("[fd00::2]:22"), ap("[fd00::1]:50000"), "01", 204) + "\n",
			want: []string{"tcp :: 8080 201", "tcp ::1 5432 202", "tcp ::ffff:127.0.0.1 9000 203"}},
		{name: "udp bound vs connected", proto: "udp", text: strings.Join([]string{
			tcpHeader,
			procLine(0, ap("0.0.0.0:68"), any4, "07", 301),
			procLine(1, ap("127.0.0.1:53"), any4, "07", 302),
			procLine(2, ap("10.0.0.2:41000"), ap("10.0.0.1:53"), "01", 303),
		}, "\n"),
			want: []string{"udp 0.0.0.0 68 301", "udp 127.0.0.1 53 302"}},
		{name: "listen state means nothing for udp", proto: "udp", text: procLine(0, ap("0.0.0.0:1"), any4, "0A", 1)},
		{name: "real kernel text", proto: "tcp", text: tcpHeader + "\n" +
			"   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n",
			want: []string{"tcp 127.0.0.1 3306 12345"}},
		{name: "too few fields", proto: "tcp", text: tcpHeader + "\n   0: 0100007F:0CEA 00000000:0000 0A\n", err: true},
		{name: "bad address", proto: "tcp", text: "   0: 0100007G:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 1 1\n", err: true},
		{name: "bad length", proto: "tcp", text: "   0: 0100007:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 1 1\n", err: true},
		{name: "bad inode", proto: "tcp", text: "   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 x 1\n", err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseProcNet(c.proto, strings.NewReader(c.text))
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error: %v", err, c.err)
			}
			var s []string
			for _, e := range got {
				s = append(s, fmt.Sprintf("%s %s %d %d", e.Proto, e.Addr, e.Port, e.Inode))
			}
			if strings.Join(s, "|") != strings.Join(c.want, "|") {
				t.Fatalf("got %q, want %q", s, c.want)
			}
		})
	}
}

func TestParseHexAddrPort(t *testing.T) {
	for _, want := range []string{"127.0.0.1:3306", "10.1.2.3:1", "[::1]:65535", "[fe80::1234:5678:9abc:def0]:22", "[2001:db8::ff00:42:8329]:443"} {
		ap := netip.MustParseAddrPort(want)
		s := fmt.Sprintf("%s:%04X", hexAddr(ap.Addr()), ap.Port())
		got, err := parseHexAddrPort(s)
		if err != nil || got != ap {
			t.Errorf("parseHexAddrPort(%q) = %v, %v; want %v", s, got, err, ap)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "0100007F:12345", "0100007F:XYZW", "zz00007F:0016", "0100007F00:0016"} {
		if _, err := parseHexAddrPort(bad); err == nil {
			t.Errorf("parseHexAddrPort(%q) accepted", bad)
		}
	}
}

func TestSocketInode(t *testing.T) {
	cases := map[string]uint64{"socket:[12345]": 12345, "socket:[0]": 0}
	for in, want := range cases {
		if got, ok := socketInode(in); !ok || got != want {
			t.Errorf("socketInode(%q) = %d %v", in, got, ok)
		}
	}
	for _, bad := range []string{"pipe:[12]", "socket:[12", "socket:[x]", "/dev/null", "anon_inode:[eventfd]"} {
		if _, ok := socketInode(bad); ok {
			t.Errorf("socketInode(%q) accepted", bad)
		}
	}
}

func TestPortsFrom(t *testing.T) {
	a := netip.MustParseAddr
	entries := []socketEntry{
		{Proto: "udp", Addr: a("0.0.0.0"), Port: 68, Inode: 5},
		{Proto: "tcp", Addr: a("::"), Port: 22, Inode: 4},
		{Proto: "tcp", Addr: a("0.0.0.0"), Port: 22, Inode: 3},
		{Proto: "tcp", Addr: a("0.0.0.0"), Port: 8080, Inode: 1}, // SO_REUSEPORT pair
		{Proto: "tcp", Addr: a("0.0.0.0"), Port: 8080, Inode: 2},
	}
	owners := map[uint64]owner{2: {pid: 42, comm: "server"}, 3: {pid: 1, comm: "sshd"}}
	got, truncated := portsFrom(entries, owners)
	want := []agentproto.Port{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 22, PID: 1, Process: "sshd"},
		{Proto: "tcp", Addr: "::", Port: 22},
		{Proto: "tcp", Addr: "0.0.0.0", Port: 8080, PID: 42, Process: "server"},
		{Proto: "udp", Addr: "0.0.0.0", Port: 68},
	}
	if truncated || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %+v (truncated %v), want %+v", got, truncated, want)
	}

	var many []socketEntry
	for i := range agentproto.MaxPorts + 10 {
		many = append(many, socketEntry{Proto: "tcp", Addr: a("0.0.0.0"), Port: uint16(1000 + i)})
	}
	got, truncated = portsFrom(many, nil)
	if !truncated || len(got) != agentproto.MaxPorts || got[0].Port != 1000 {
		t.Fatalf("truncation: %d entries, truncated %v", len(got), truncated)
	}
}

// A fake /proc tree: socket tables plus one process holding a socket.
func TestListPortsFakeProc(t *testing.T) {
	root := t.TempDir()
	ap := netip.MustParseAddrPort
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "net"), 0o755))
	must(os.WriteFile(filepath.Join(root, "net", "tcp"), []byte(tcpHeader+"\n"+procLine(0, ap("127.0.0.1:8000"), ap("0.0.0.0:0"), "0A", 777)+"\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "net", "udp"), []byte(tcpHeader+"\n"), 0o644))
	// no tcp6/udp6: a kernel without IPv6
	must(os.MkdirAll(filepath.Join(root, "123", "fd"), 0o755))
	must(os.WriteFile(filepath.Join(root, "123", "comm"), []byte("webserver\n"), 0o644))
	must(os.Symlink("socket:[777]", filepath.Join(root, "123", "fd", "3")))
	must(os.Symlink("/dev/null", filepath.Join(root, "123", "fd", "0")))
	must(os.MkdirAll(filepath.Join(root, "self"), 0o755))

	got, truncated, err := listPorts(root)
	must(err)
	want := []agentproto.Port{{Proto: "tcp", Addr: "127.0.0.1", Port: 8000, PID: 123, Process: "webserver"}}
	if truncated || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
