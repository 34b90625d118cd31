package vmdns

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// exchangeFrom sends m from the address from to the server at to and
// returns the raw reply, or nil when none came within wait (UDP) or the
// server closed the connection (TCP).
func exchangeFrom(t *testing.T, network, from string, to netip.AddrPort, m *dns.Msg, wait time.Duration) []byte {
	t.Helper()
	c, err := dialFrom(network, from, to)
	if err != nil {
		t.Skipf("cannot send from %s here: %v", from, err)
	}
	defer c.Close()
	return roundTrip(t, network, c, m, wait)
}

func dialFrom(network, from string, to netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return d.Dial(network, to.String())
}

// roundTrip sends m on c and returns the raw reply, or nil as exchangeFrom.
func roundTrip(t *testing.T, network string, c net.Conn, m *dns.Msg, wait time.Duration) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if network == "tcp" {
		b = append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if network == "udp" {
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("tcp: the server neither answered nor closed the connection")
		}
		return nil // closed unanswered
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func unpack(t *testing.T, raw []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		t.Fatalf("unpack reply: %v", err)
	}
	return m
}

// A guest listener answers only sources in the guest subnet; everyone else
// gets nothing back, over UDP and TCP, while the host's listener is not
// affected.
func TestGuestListenerDropsOutsiders(t *testing.T) {
	s := startServer(t, Config{Upstreams: []string{"127.0.0.1:1"}, GuestSubnet: netip.MustParsePrefix("127.0.0.2/32")})
	if err := s.Set("web", netip.MustParseAddr("172.16.0.2")); err != nil {
		t.Fatal(err)
	}
	gw, err := s.AddListener("127.0.0.3:0")
	if err != nil {
		t.Skipf("no 127.0.0.3 here: %v", err)
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			raw := exchangeFrom(t, network, "127.0.0.2", gw, question("web.vm.", dns.TypeA), 5*time.Second)
			if raw == nil || len(unpack(t, raw).Answer) != 1 {
				t.Fatalf("a source inside the subnet got no answer")
			}
			if raw := exchangeFrom(t, network, "127.0.0.1", gw, question("web.vm.", dns.TypeA), 500*time.Millisecond); raw != nil {
				t.Fatalf("a source outside the subnet got an answer: %v", unpack(t, raw))
			}
			raw = exchangeFrom(t, network, "127.0.0.1", s.Addrs()[0], question("web.vm.", dns.TypeA), 5*time.Second)
			if raw == nil || len(unpack(t, raw).Answer) != 1 {
				t.Fatalf("the host's listener stopped answering")
			}
		})
	}
}

// Over UDP a guest listener also drops packets that did not arrive on the
// interface holding its address, or on loopback, whatever their source.
// Packets here all arrive on loopback, so the lookup pretends the
// interfaces are elsewhere.
func TestGuestListenerChecksArrivalInterface(t *testing.T) {
	s := startServer(t, Config{Upstreams: []string{"127.0.0.1:1"}, GuestSubnet: netip.MustParsePrefix("127.0.0.0/8")})
	_, lo := interfaceHolding(netip.MustParseAddr("127.0.0.2"))
	if lo == 0 {
		t.Skip("no loopback interface")
	}
	// The listener's goroutine asks while the test changes the answer.
	var home, loopback atomic.Int64
	home.Store(int64(lo + 1000))
	loopback.Store(int64(lo + 1001))
	s.ifaceOf = func(netip.Addr) (int, int) { return int(home.Load()), int(loopback.Load()) }
	gw, err := s.AddListener("127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	if raw := exchangeFrom(t, "udp", "127.0.0.1", gw, question("vm.", dns.TypeSOA), 500*time.Millisecond); raw != nil {
		t.Fatal("a packet from another interface got an answer")
	}
	gc := s.listeners[len(s.listeners)-1].udp.PacketConn.(*guestConn)
	if gc.dropped.Load() == 0 {
		t.Error("drop not counted")
	}

	for _, c := range []struct {
		name           string
		home, loopback int
	}{
		{"arrived on the listener's interface", lo, 0},
		{"arrived on loopback: the host itself", lo + 1000, lo},
	} {
		home.Store(int64(c.home))
		loopback.Store(int64(c.loopback))
		gc.home.mu.Lock()
		gc.home.checked, gc.home.index, gc.home.loopback = time.Time{}, 0, 0
		gc.home.mu.Unlock()
		if raw := exchangeFrom(t, "udp", "127.0.0.1", gw, question("vm.", dns.TypeSOA), 5*time.Second); raw == nil {
			t.Errorf("%s: no answer", c.name)
		}
	}
}

// The interfaces are looked up again when a packet arrives on another one
// (the bridge was recreated), but not more than once a second.
func TestHomeIfaceLookupIsRateLimited(t *testing.T) {
	calls, index := 0, 7
	h := &homeIface{ip: netip.MustParseAddr("172.16.0.1"), lookup: func(netip.Addr) (int, int) { calls++; return index, 1 }}
	if !h.is(7) || !h.is(1) || calls != 1 {
		t.Fatalf("first packets: calls=%d", calls)
	}
	for range 100 {
		if h.is(9) {
			t.Fatal("a packet from interface 9 admitted")
		}
	}
	if calls != 1 {
		t.Fatalf("lookups after 100 foreign packets within a second = %d, want 1", calls)
	}
	index = 9
	if h.is(9) {
		t.Fatal("looked up again within a second")
	}
	h.checked = time.Now().Add(-2 * reresolveEvery)
	if !h.is(9) || calls != 2 {
		t.Fatalf("recreated bridge not picked up: calls=%d", calls)
	}
	gone := &homeIface{ip: netip.MustParseAddr("172.16.0.1"), lookup: func(netip.Addr) (int, int) { return 0, 0 }}
	if gone.is(0) {
		t.Fatal("index 0 admitted for an address no interface holds")
	}
}

func TestArrivalIndex(t *testing.T) {
	v6 := unix.Inet6Pktinfo{Ifindex: 12}
	v6msg := unix.PktInfo6(&v6)
	cases := []struct {
		name string
		oob  []byte
		want int
		ok   bool
	}{
		{"ipv4", unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: 5}), 5, true},
		{"ipv6", v6msg, 12, true},
		{"none", nil, 0, false},
		{"other message", unix.UnixRights(0), 0, false},
		{"garbage", []byte{1, 2, 3}, 0, false},
	}
	for _, c := range cases {
		got, ok := arrivalIndex(c.oob)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: got %d %v, want %d %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestAddListenerNeedsSubnet(t *testing.T) {
	s := startServer(t, Config{Upstreams: []string{"127.0.0.1:1"}})
	if _, err := s.AddListener("127.0.0.2:0"); !errors.Is(err, errNoSubnet) {
		t.Fatalf("guest listener without a subnet: %v", err)
	}
}

// A guest cannot hold more than maxTCPConns connections open.
func TestTCPConnectionsBounded(t *testing.T) {
	// A long read timeout: idle connections stay until the client closes.
	_, gw := guestServer(t, Config{Upstreams: []string{"127.0.0.1:1"}, Timeout: time.Minute})
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			_ = c.Close()
		}
	})
	for range maxTCPConns {
		c, err := net.DialTimeout("tcp", gw.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // let the server accept them all
	if raw := exchangeFrom(t, "tcp", "127.0.0.1", gw, question("vm.", dns.TypeSOA), 5*time.Second); raw != nil {
		t.Fatal("a connection past the cap was served")
	}
	_ = held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for exchangeFrom(t, "tcp", "127.0.0.1", gw, question("vm.", dns.TypeSOA), 5*time.Second) == nil {
		if time.Now().After(deadline) {
			t.Fatal("a closed connection did not free its slot")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
