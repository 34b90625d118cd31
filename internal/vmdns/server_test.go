package vmdns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeUpstream is a resolver on 127.0.0.1 that answers every name with
// 192.0.2.1, and "big.example." with enough records to need TCP.
type fakeUpstream struct {
	addr      string
	udp, tcp  atomic.Int32 // queries seen per protocol
	lastID    atomic.Uint32
	lastQName atomic.Value
}

func startUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	pc, ln, err := listenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
			u.tcp.Add(1)
		} else {
			u.udp.Add(1)
		}
		u.lastID.Store(uint32(r.Id))
		u.lastQName.Store(r.Question[0].Name)
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		n := 1
		switch r.Question[0].Name {
		case "big.example.":
			n = 100
		case "huge.example.":
			n = 2000 // about 32 KiB even compressed
		}
		for i := range n {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(192, 0, byte(2+i/250), byte(1+i%250)),
			})
		}
		if _, ok := w.LocalAddr().(*net.UDPAddr); ok {
			m.Truncate(udpSize(r))
		}
		_ = w.WriteMsg(m)
	})
	servers := []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}}
	done := make(chan struct{}, 2)
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe(); done <- struct{}{} }()
		<-started
	}
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Shutdown()
			<-done
		}
	})
	return u
}

// blackHole is an upstream that reads queries and never answers.
func blackHole(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return pc.LocalAddr().String()
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Listen == nil {
		cfg.Listen = []string{"127.0.0.1:0"}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// guestServer starts a server with a guest listener on 127.0.0.2 that
// admits the whole loopback net and forwards for 127.0.0.1, the source a
// client dialling 127.0.0.2 gets. It returns that listener's address.
func guestServer(t *testing.T, cfg Config) (*Server, netip.AddrPort) {
	t.Helper()
	cfg.GuestSubnet = netip.MustParsePrefix("127.0.0.0/8")
	s := startServer(t, cfg)
	addr, err := s.AddListener("127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	s.SetRecursion(netip.MustParseAddr("127.0.0.1"), true)
	return s, addr
}

func query(t *testing.T, network string, addr netip.AddrPort, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(req, addr.String())
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestServeZone(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, Config{Upstreams: []string{up.addr}})
	if err := s.Set("web", netip.MustParseAddr("172.16.0.2")); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0]
	if addr.Port() == 0 {
		t.Fatal("port 0 was not resolved")
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := query(t, network, addr, "web.vm.", dns.TypeA)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "172.16.0.2" {
				t.Errorf("A: %v", r)
			}
			r = query(t, network, addr, "WEB.vm.", dns.TypeA)
			if len(r.Answer) != 1 || r.Answer[0].Header().Name != "WEB.vm." {
				t.Errorf("mixed case: %v", r)
			}
			r = query(t, network, addr, "web.vm.", dns.TypeAAAA)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
				t.Errorf("AAAA: %v", r)
			}
			r = query(t, network, addr, "nope.vm.", dns.TypeA)
			if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
				t.Errorf("unknown: %v", r)
			}
			r = query(t, network, addr, "vm.", dns.TypeSOA)
			if soa, ok := r.Answer[0].(*dns.SOA); !ok || soa.Ns != "ns.vm." || !r.Authoritative {
				t.Errorf("SOA: %v", r)
			}
			r = query(t, network, addr, "ns.vm.", dns.TypeA)
			if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
				t.Errorf("NS target: %v", r)
			}
		})
	}
	if up.udp.Load()+up.tcp.Load() != 0 {
		t.Error("a zone query was forwarded")
	}

	// Runtime changes.
	s.Remove("web")
	if r := query(t, "udp", addr, "web.vm.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("after remove: %v", r)
	}
	if err := s.Replace(map[string]netip.Addr{"db": netip.MustParseAddr("172.16.0.3")}); err != nil {
		t.Fatal(err)
	}
	if r := query(t, "udp", addr, "db.vm.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("after replace: %v", r)
	}
}

func TestForward(t *testing.T) {
	up := startUpstream(t)
	_, addr := guestServer(t, Config{Upstreams: []string{up.addr}})

	req := new(dns.Msg)
	req.SetQuestion("example.com.", dns.TypeA)
	req.Id = 4242
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(req, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	if r.Id != 4242 || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Fatalf("forwarded answer: %v", r)
	}
	if up.lastID.Load() == 4242 {
		t.Error("the client's query ID was reused upstream")
	}
	if up.udp.Load() != 1 || up.tcp.Load() != 0 {
		t.Errorf("upstream saw udp=%d tcp=%d, want 1/0", up.udp.Load(), up.tcp.Load())
	}

	// Truncated over UDP upstream: retried over TCP; the client (UDP, no
	// EDNS) gets a truncated reply and can come back over TCP itself.
	r = query(t, "udp", addr, "big.example.", dns.TypeA)
	if !r.Truncated {
		t.Errorf("UDP client: want TC, got %d answers", len(r.Answer))
	}
	if up.tcp.Load() != 1 {
		t.Errorf("upstream tcp queries = %d, want 1 (retry after truncation)", up.tcp.Load())
	}
	r = query(t, "tcp", addr, "big.example.", dns.TypeA)
	if r.Truncated || len(r.Answer) != 100 {
		t.Errorf("TCP client: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	if up.tcp.Load() != 2 {
		t.Errorf("a TCP client's query should go upstream over TCP at once: tcp=%d", up.tcp.Load())
	}
	// The zone suffix must match whole labels.
	r = query(t, "udp", addr, "avm.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || up.lastQName.Load() != "avm." {
		t.Errorf("avm. not forwarded: %v", r)
	}
}

func TestForwardFailover(t *testing.T) {
	up := startUpstream(t)
	_, addr := guestServer(t, Config{Upstreams: []string{blackHole(t), up.addr}, Timeout: 200 * time.Millisecond})
	r := query(t, "udp", addr, "example.com.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("second upstream not used: %v", r)
	}
}

func TestUpstreamTimeoutIsServfail(t *testing.T) {
	_, addr := guestServer(t, Config{Upstreams: []string{blackHole(t)}, Timeout: 200 * time.Millisecond})
	start := time.Now()
	r := query(t, "udp", addr, "example.com.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestShutdownAbortsForwards(t *testing.T) {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{blackHole(t)}, Timeout: time.Minute,
		GuestSubnet: netip.MustParsePrefix("127.0.0.0/8")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr, err := s.AddListener("127.0.0.2:0")
	if err != nil {
		_ = s.Shutdown(context.Background())
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	s.SetRecursion(netip.MustParseAddr("127.0.0.1"), true)
	req := new(dns.Msg)
	req.SetQuestion("example.com.", dns.TypeA)
	conn, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, _ := req.Pack()
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the forward start
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("shutdown took %s with a pending forward", d)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}

func TestResolvConfUpstreams(t *testing.T) {
	// Only the parsed list is checked: resolv.conf cannot name a port, so
	// no fake upstream can stand behind it, and nothing is sent to these.
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.53\nnameserver 192.0.2.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{ResolvConf: rc})
	if got := strings.Join(s.Upstreams(), ","); got != "127.0.0.53:53,192.0.2.7:53" {
		t.Fatalf("upstreams = %q", got)
	}
	s2, addr := guestServer(t, Config{ResolvConf: filepath.Join(dir, "missing")})
	if len(s2.Upstreams()) != 0 {
		t.Fatalf("upstreams = %q", s2.Upstreams())
	}
	r := query(t, "udp", addr, "example.com.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no upstream: %v", r)
	}
}

func TestAddListener(t *testing.T) {
	s := startServer(t, Config{Upstreams: []string{"127.0.0.1:1"}, GuestSubnet: netip.MustParsePrefix("127.0.0.0/8")})
	if err := s.Set("web", netip.MustParseAddr("172.16.0.2")); err != nil {
		t.Fatal(err)
	}
	// Another loopback address stands in for the bridge IP.
	extra, err := s.AddListener("127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, network, extra, "web.vm.", dns.TypeA)
		if len(r.Answer) != 1 {
			t.Errorf("%s via extra listener: %v", network, r)
		}
		r = query(t, network, extra, "ns.vm.", dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.2" {
			t.Errorf("%s NS target via extra listener: %v", network, r)
		}
	}
	if len(s.Addrs()) != 2 {
		t.Errorf("addrs = %v", s.Addrs())
	}
}

func TestStartErrors(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := New(Config{Listen: []string{"127.0.0.1:0", busy.LocalAddr().String()}, Upstreams: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("start on a busy port: %v", err)
	}
	if len(s.Addrs()) != 0 {
		t.Fatalf("listeners left after a failed start: %v", s.Addrs())
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	for _, cfg := range []Config{
		{Listen: []string{"localhost:53"}},
		{Upstreams: []string{"dns.example"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}

	s = startServer(t, Config{Upstreams: []string{"127.0.0.1:1"}})
	if err := s.Start(); err == nil {
		t.Error("second Start accepted")
	}
}

func TestBadQueries(t *testing.T) {
	s := startServer(t, Config{Upstreams: []string{"127.0.0.1:1"}})
	c := &dns.Client{Timeout: 5 * time.Second}
	req := new(dns.Msg)
	req.SetNotify("vm.")
	r, _, err := c.Exchange(req, s.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %s", dns.RcodeToString[r.Rcode])
	}
}

func ExampleServer() {
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:1"}})
	if err != nil {
		panic(err)
	}
	if err := s.Start(); err != nil {
		panic(err)
	}
	defer func() { _ = s.Shutdown(context.Background()) }()
	_ = s.Set("web", netip.MustParseAddr("172.16.0.2"))
	ip, _ := s.Lookup("web.vm")
	fmt.Println(ip)
	// Output: 172.16.0.2
}
