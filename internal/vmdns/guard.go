package vmdns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Guarding a guest listener. The gateway address is reachable by every
// guest, and, since Linux accepts a packet for any local address on any
// interface, by anything that can route to the host. A query from outside
// the VM subnet is dropped before it is parsed and gets no answer at all: a
// REFUSED would still let a spoofed source turn the host into a reflector.
// Over UDP the packet must also have arrived on the interface that holds the
// listener's address (the bridge): a source address alone can be forged.
// The host's own queries to the bridge address (systemd-resolved's .vm
// routing) come from that address and, on the kernels tried, report the
// bridge as their interface; loopback is admitted too in case a kernel
// reports lo, since nothing from outside the host can arrive on it. Over TCP the handshake
// already proves the source can receive at its address.

// reresolveEvery bounds how often a packet from an unexpected interface
// makes the guard look the listener's interface up again (it changes when
// the bridge is recreated).
const reresolveEvery = time.Second

// ifaceLookup returns the indexes of the interface that holds ip and of the
// loopback interface (0 when there is none).
type ifaceLookup func(ip netip.Addr) (home, loopback int)

// homeIface is where a listener's packets may arrive from: the interface
// its address lives on, and loopback. Both are looked up lazily and again,
// at most once per reresolveEvery, when a packet arrives on another one.
type homeIface struct {
	ip     netip.Addr
	lookup ifaceLookup

	mu       sync.Mutex
	index    int
	loopback int
	checked  time.Time
}

func (h *homeIface) is(index int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.admits(index) {
		return true
	}
	if !h.checked.IsZero() && time.Since(h.checked) < reresolveEvery {
		return false
	}
	h.checked = time.Now()
	h.index, h.loopback = h.lookup(h.ip)
	return h.admits(index)
}

// admits is the check against the cached indexes. Callers hold h.mu.
func (h *homeIface) admits(index int) bool {
	return index != 0 && (index == h.index || index == h.loopback)
}

// interfaceHolding is the default ifaceLookup: the interface with ip as one
// of its addresses (for a loopback ip, the loopback interface, which
// answers its whole 127.0.0.0/8), and the loopback interface.
func interfaceHolding(ip netip.Addr) (home, loopback int) {
	ifs, err := net.Interfaces()
	if err != nil {
		return 0, 0
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 && loopback == 0 {
			loopback = ifc.Index
		}
		addrs, err := ifc.Addrs()
		if err != nil || home != 0 {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == ip {
					home = ifc.Index
				}
			}
		}
	}
	if home == 0 && ip.IsLoopback() {
		home = loopback
	}
	return home, loopback
}

// guestConn is a guest listener's UDP socket. It is deliberately not a
// *net.UDPConn, so the dns package reads through ReadFrom, which drops
// every packet the guard does not admit. Only one goroutine reads (the dns
// server's loop), so the control-message buffer is reused.
type guestConn struct {
	*net.UDPConn
	subnet  netip.Prefix
	home    *homeIface
	oob     []byte
	dropped atomic.Int64
}

// newGuestConn turns on IP_PKTINFO (IPV6_RECVPKTINFO for an IPv6 listener)
// so every read reports its arrival interface.
func newGuestConn(uc *net.UDPConn, subnet netip.Prefix, lookup ifaceLookup) (*guestConn, error) {
	local := uc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	level, opt := unix.IPPROTO_IP, unix.IP_PKTINFO
	if local.Is6() {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("enable packet info: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) }); err != nil {
		return nil, fmt.Errorf("enable packet info: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("enable packet info: %w", serr)
	}
	return &guestConn{
		UDPConn: uc,
		subnet:  subnet,
		home:    &homeIface{ip: local, lookup: lookup},
		oob:     make([]byte, 128),
	}, nil
}

// ReadFrom returns the next admitted packet.
func (c *guestConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(b, c.oob)
		if err != nil {
			return n, nil, err
		}
		idx, ok := arrivalIndex(c.oob[:oobn])
		if ok && c.subnet.Contains(from.Addr().Unmap()) && c.home.is(idx) {
			return n, net.UDPAddrFromAddrPort(from), nil
		}
		c.dropped.Add(1)
	}
}

// arrivalIndex is the interface index in an IP_PKTINFO or IPV6_PKTINFO
// control message.
func arrivalIndex(oob []byte) (int, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; ... }
			return int(int32(binary.NativeEndian.Uint32(m.Data[0:4]))), true
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned ipi6_ifindex; }
			return int(binary.NativeEndian.Uint32(m.Data[16:20])), true
		}
	}
	return 0, false
}

// boundedListener caps a listener's concurrent TCP connections and, when
// subnet is valid, closes at once every connection from outside it. A
// connection over the cap is closed unanswered too: DNS clients fall back
// or retry, and a guest cannot pin bangerd's goroutines and descriptors.
type boundedListener struct {
	net.Listener
	subnet netip.Prefix // zero: any source
	slots  chan struct{}
}

func (l *boundedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.subnet.IsValid() {
			ra, ok := c.RemoteAddr().(*net.TCPAddr)
			if !ok || !l.subnet.Contains(ra.AddrPort().Addr().Unmap()) {
				_ = c.Close()
				continue
			}
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, slots: l.slots}, nil
		default:
			_ = c.Close()
		}
	}
}

// slotConn gives its slot back once, however often it is closed.
type slotConn struct {
	net.Conn
	slots chan struct{}
	once  sync.Once
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.slots })
	return err
}

// errNoSubnet refuses a guest listener without a subnet to admit.
var errNoSubnet = errors.New("no guest subnet configured")
