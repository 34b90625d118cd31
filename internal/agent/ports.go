package agent

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"banger/internal/agentproto"
)

// procRoot is where the kernel's process and socket tables are read from.
const procRoot = "/proc"

// socketTables are the /proc/net tables the ports op reads.
var socketTables = []struct {
	file  string
	proto string
}{
	{"tcp", "tcp"}, {"tcp6", "tcp"}, {"udp", "udp"}, {"udp6", "udp"},
}

// Socket states of /proc/net/tcp (include/net/tcp_states.h).
const (
	tcpListen = 0x0A
	tcpClose  = 0x07 // an unconnected UDP socket
)

// socketEntry is one listening socket of a /proc/net table.
type socketEntry struct {
	Proto string
	Addr  netip.Addr
	Port  uint16
	Inode uint64
}

// parseProcNet returns the listening sockets of one /proc/net/{tcp,tcp6,
// udp,udp6} table: TCP sockets in LISTEN, and UDP sockets that are bound
// and not connected to a peer. proto is "tcp" or "udp". Malformed lines are
// an error: the format is the kernel's and has been stable for decades.
func parseProcNet(proto string, r io.Reader) ([]socketEntry, error) {
	var out []socketEntry
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if first {
			first = false
			if len(f) > 0 && f[0] == "sl" {
				continue // header line
			}
		}
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return nil, fmt.Errorf("parse %s socket line %q: too few fields", proto, sc.Text())
		}
		local, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("parse %s local address: %w", proto, err)
		}
		remote, err := parseHexAddrPort(f[2])
		if err != nil {
			return nil, fmt.Errorf("parse %s remote address: %w", proto, err)
		}
		state, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("parse %s socket state %q: %w", proto, f[3], err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse %s socket inode %q: %w", proto, f[9], err)
		}
		listening := false
		switch proto {
		case "tcp":
			listening = state == tcpListen
		case "udp":
			listening = state == tcpClose && remote.Port() == 0 && remote.Addr().IsUnspecified() && local.Port() != 0
		}
		if listening {
			out = append(out, socketEntry{Proto: proto, Addr: local.Addr(), Port: local.Port(), Inode: inode})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s socket table: %w", proto, err)
	}
	return out, nil
}

// parseHexAddrPort decodes the kernel's "ADDR:PORT" socket address: the
// address as 32-bit words printed in host byte order (8 hex digits for
// IPv4, 32 for IPv6), the port as 4 hex digits.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || len(p) != 4 || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad socket port %q: %w", s, err)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad socket address %q: %w", s, err)
	}
	// Each word was printed as a number: turn it back into memory order,
	// which is network order.
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// socketOwners maps socket inodes to the first process found holding them,
// by reading the fd links under root/<pid>/fd. Best effort: processes come
// and go and some may not be readable.
func socketOwners(root string, want map[uint64]bool) map[uint64]owner {
	out := map[uint64]owner{}
	if len(want) == 0 {
		return out
	}
	procs, err := os.ReadDir(root)
	if err != nil {
		return out
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(root, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := socketInode(link)
			if !ok || !want[inode] {
				continue
			}
			if _, seen := out[inode]; seen {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(root, p.Name(), "comm"))
				comm = strings.TrimSpace(string(b))
			}
			out[inode] = owner{pid: pid, comm: comm}
		}
		if len(out) == len(want) {
			break
		}
	}
	return out
}

type owner struct {
	pid  int
	comm string
}

// socketInode parses an fd link of the form "socket:[12345]".
func socketInode(link string) (uint64, bool) {
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// listPorts reads the socket tables and owners under root and returns the
// sorted, de-duplicated listening sockets (several sockets may share an
// address with SO_REUSEPORT), and whether the list was cut to MaxPorts.
func listPorts(root string) ([]agentproto.Port, bool, error) {
	var entries []socketEntry
	for _, t := range socketTables {
		f, err := os.Open(filepath.Join(root, "net", t.file))
		if err != nil {
			if os.IsNotExist(err) {
				continue // e.g. a kernel without IPv6
			}
			return nil, false, fmt.Errorf("list ports: %w", err)
		}
		es, err := parseProcNet(t.proto, f)
		f.Close()
		if err != nil {
			return nil, false, fmt.Errorf("list ports: %w", err)
		}
		entries = append(entries, es...)
	}
	want := make(map[uint64]bool, len(entries))
	for _, e := range entries {
		if e.Inode != 0 {
			want[e.Inode] = true
		}
	}
	list, truncated := portsFrom(entries, socketOwners(root, want))
	return list, truncated, nil
}

// portsFrom turns socket entries into the sorted, de-duplicated reply list
// and reports whether it was cut to MaxPorts.
func portsFrom(entries []socketEntry, owners map[uint64]owner) ([]agentproto.Port, bool) {
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, func(a, b socketEntry) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), a.Addr.Compare(b.Addr))
	})
	var out []agentproto.Port
	var last socketEntry
	for i, e := range entries {
		o := owners[e.Inode]
		if i > 0 && e.Proto == last.Proto && e.Port == last.Port && e.Addr == last.Addr {
			if p := &out[len(out)-1]; p.PID == 0 && o.pid != 0 {
				p.PID, p.Process = o.pid, o.comm
			}
			continue
		}
		last = e
		out = append(out, agentproto.Port{Proto: e.Proto, Addr: e.Addr.String(), Port: e.Port, PID: o.pid, Process: o.comm})
	}
	if len(out) > agentproto.MaxPorts {
		return out[:agentproto.MaxPorts], true
	}
	return out, false
}

func ports(w io.Writer) {
	list, truncated, err := listPorts(procRoot)
	if err != nil {
		reply(w, err)
		return
	}
	_ = agentproto.WriteJSONLine(w, agentproto.Reply{OK: true, Ports: list, Truncated: truncated})
}
