// Package vmdns is the DNS server bangerd runs for VM names.
//
// It is authoritative for the zone "vm.": "<name>.vm" has an A record with
// the guest IPv4 of each running VM, set and removed at runtime (Set,
// Remove) and rebuilt wholesale after a daemon restart (Replace). Names are
// case-insensitive. Unknown names in the zone get NXDOMAIN, a known name
// asked for any other type (AAAA included) gets an empty NOERROR answer, and
// the apex has an SOA and an NS record ("ns.vm.", whose A record is the
// address the query arrived on unless a VM is called "ns").
//
// Other names are forwarded only for guests granted recursion (those with
// NAT, see SetRecursion and policy.go); everyone else gets REFUSED. A
// forwarded query goes to upstream resolvers, tried in order with a
// per-attempt timeout: over UDP, retried over TCP when the answer is
// truncated (over TCP at once for clients that came over TCP). When no
// upstream answers the client gets SERVFAIL. Every reply is bounded in size
// (policy.go). Upstreams are configured, or
// by default read once at Start from resolv.conf. A nameserver there is kept
// even when it is a local stub such as systemd-resolved's 127.0.0.53: only
// entries that are this server's own listening addresses are dropped, since
// forwarding to them would loop. A stub that routes "vm." back here does
// not loop either, because names in the zone are never forwarded.
//
// The server listens on UDP and TCP on the same port at each address: the
// configured list (by default 127.0.0.1:42069, for the host's resolver) at
// Start, and guest listeners at runtime with AddListener (the bridge
// address). A guest listener answers only clients inside the VM subnet, and
// over UDP only packets that arrived on its address's interface; anything
// else is dropped unanswered (guard.go). Port 0 picks a free port shared by
// both protocols.
package vmdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Defaults.
const (
	DefaultListen     = "127.0.0.1:42069"
	DefaultResolvConf = "/etc/resolv.conf"
	DefaultTimeout    = 2 * time.Second
	DefaultTTL        = 10
	// maxForwards bounds concurrent forwarded queries; beyond it clients
	// get SERVFAIL at once instead of piling up goroutines.
	maxForwards = 256
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Listen are "ip:port" addresses bound at Start, each on UDP and TCP.
	// Empty means DefaultListen.
	Listen []string
	// GuestSubnet is the VM subnet: the only sources a guest listener
	// (AddListener) answers. AddListener fails without it.
	GuestSubnet netip.Prefix
	// Upstreams are resolvers for names outside the zone ("ip" or
	// "ip:port"). Empty means the nameservers of ResolvConf.
	Upstreams []string
	// ResolvConf is read at Start when Upstreams is empty.
	ResolvConf string
	// Timeout bounds each upstream attempt.
	Timeout time.Duration
	// TTL of the zone's A and NS records, in seconds.
	TTL uint32
	// Logf, if set, receives forwarding failures and serve errors.
	Logf func(format string, args ...any)
}

// Server is the DNS server. Its record methods are safe to call at any
// time, before Start and after Shutdown included.
type Server struct {
	cfg  Config
	zone *zone
	sem  chan struct{}

	ctx    context.Context // cancelled by Shutdown: aborts forwards
	cancel context.CancelFunc

	// ifaceOf finds the interface holding a guest listener's address
	// (a seam for tests).
	ifaceOf ifaceLookup

	recMu     sync.RWMutex
	recursive map[netip.Addr]bool // guests that may have other names resolved

	mu        sync.Mutex
	started   bool
	stopped   bool
	fwd       *forwarder
	listeners []*listener
	wg        sync.WaitGroup
}

// listener is one address served on UDP and TCP.
type listener struct {
	addr  netip.AddrPort
	guest bool // a gateway listener: guarded, recursion per client
	udp   *dns.Server
	tcp   *dns.Server
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{DefaultListen}
	}
	for _, a := range cfg.Listen {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return nil, fmt.Errorf("parse listen address %q: %w", a, err)
		}
	}
	ups := make([]string, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		n, err := NormalizeUpstream(u)
		if err != nil {
			return nil, err
		}
		ups = append(ups, n)
	}
	cfg.Upstreams = ups
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if cfg.GuestSubnet.IsValid() {
		cfg.GuestSubnet = cfg.GuestSubnet.Masked()
	}
	return &Server{
		cfg:       cfg,
		zone:      newZone(cfg.TTL),
		sem:       make(chan struct{}, maxForwards),
		ctx:       ctx,
		cancel:    cancel,
		ifaceOf:   interfaceHolding,
		recursive: map[netip.Addr]bool{},
	}, nil
}

// Set adds or updates "<name>.vm" → ip (an IPv4 address).
func (s *Server) Set(name string, ip netip.Addr) error { return s.zone.set(name, ip) }

// Remove deletes the record of name and reports whether it existed.
func (s *Server) Remove(name string) bool { return s.zone.remove(name) }

// Replace swaps the whole record set for records (VM name → IPv4), as
// after a daemon restart. Nothing changes if any entry is invalid.
func (s *Server) Replace(records map[string]netip.Addr) error { return s.zone.replace(records) }

// Lookup returns the address recorded for name.
func (s *Server) Lookup(name string) (netip.Addr, bool) { return s.zone.lookup(name) }

// Records returns a copy of the record set (label → IPv4).
func (s *Server) Records() map[string]netip.Addr { return s.zone.snapshot() }

// Start binds every configured address and serves until Shutdown. On error
// nothing is left listening.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("start dns server: already started")
	}
	var ls []*listener
	for _, a := range s.cfg.Listen {
		l, err := s.serve(a, false)
		if err != nil {
			for _, l := range ls {
				l.shutdown(context.Background())
			}
			s.wg.Wait()
			return err
		}
		ls = append(ls, l)
	}
	ups := s.cfg.Upstreams
	if len(ups) == 0 {
		ups = s.resolvConfUpstreams(ls)
	}
	s.fwd = &forwarder{upstreams: ups, timeout: s.cfg.Timeout}
	s.listeners = ls
	s.started = true
	return nil
}

func (s *Server) resolvConfUpstreams(ls []*listener) []string {
	f, err := os.Open(s.cfg.ResolvConf)
	if err != nil {
		s.cfg.Logf("dns: no upstream resolvers: %v", err)
		return nil
	}
	defer f.Close()
	ups, err := ParseResolvConf(f)
	if err != nil {
		s.cfg.Logf("dns: no upstream resolvers: %v", err)
		return nil
	}
	self := make([]netip.AddrPort, 0, len(ls))
	for _, l := range ls {
		self = append(self, l.addr)
	}
	ups = withoutSelf(ups, self)
	if len(ups) == 0 {
		s.cfg.Logf("dns: no usable nameserver in %s: names outside %s will fail", s.cfg.ResolvConf, Apex)
	}
	return ups
}

// AddListener binds a guest listener (UDP and TCP) on a started server and
// returns the bound address. It answers only clients in Config.GuestSubnet.
func (s *Server) AddListener(addr string) (netip.AddrPort, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return netip.AddrPort{}, errors.New("add dns listener: server not running")
	}
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse listen address %q: %w", addr, err)
	}
	if !s.cfg.GuestSubnet.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("add dns listener %s: %w", addr, errNoSubnet)
	}
	l, err := s.serve(addr, true)
	if err != nil {
		return netip.AddrPort{}, err
	}
	s.listeners = append(s.listeners, l)
	return l.addr, nil
}

// Addrs returns the bound addresses (the same port serves UDP and TCP).
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(s.listeners))
	for _, l := range s.listeners {
		out = append(out, l.addr)
	}
	return out
}

// Upstreams returns the resolvers in use (known after Start).
func (s *Server) Upstreams() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fwd == nil {
		return nil
	}
	return append([]string(nil), s.fwd.upstreams...)
}

// Shutdown stops every listener, aborts forwarded queries and waits for
// the serving goroutines, at most until ctx ends. It may be called more than
// once, and before Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	ls := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	s.cancel()
	for _, l := range ls {
		l.shutdown(ctx)
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down dns server: %w", ctx.Err())
	}
}

// serve binds addr on UDP and TCP and starts serving both, guarded for
// guests when guest is set. Callers hold s.mu.
func (s *Server) serve(addr string, guest bool) (*listener, error) {
	pc, ln, err := listenPair(addr)
	if err != nil {
		return nil, err
	}
	l := &listener{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), guest: guest}
	bl := &boundedListener{Listener: ln, slots: make(chan struct{}, maxTCPConns)}
	udp := pc
	if guest {
		bl.subnet = s.cfg.GuestSubnet
		gc, err := newGuestConn(pc.(*net.UDPConn), s.cfg.GuestSubnet, s.ifaceOf)
		if err != nil {
			_ = pc.Close()
			_ = ln.Close()
			return nil, fmt.Errorf("serve dns on %s: %w", addr, err)
		}
		udp = gc
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) { s.reply(w, req, guest) })
	l.udp = &dns.Server{PacketConn: udp, Handler: h}
	l.tcp = &dns.Server{Listener: bl, Handler: h, ReadTimeout: s.cfg.Timeout, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	for _, srv := range []*dns.Server{l.udp, l.tcp} {
		if err := s.run(srv); err != nil {
			l.shutdown(context.Background())
			_ = pc.Close()
			_ = ln.Close()
			return nil, fmt.Errorf("serve dns on %s: %w", addr, err)
		}
	}
	return l, nil
}

// run starts srv in a goroutine and returns once it is serving (so that a
// later Shutdown cannot miss it) or has failed.
func (s *Server) run(srv *dns.Server) error {
	started := make(chan struct{})
	failed := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.ActivateAndServe(); err != nil {
			select {
			case <-started:
				s.cfg.Logf("dns: serve: %v", err)
			default:
			}
			failed <- err
		}
	}()
	select {
	case <-started:
		return nil
	case err := <-failed:
		return err
	}
}

func (l *listener) shutdown(ctx context.Context) {
	for _, srv := range []*dns.Server{l.udp, l.tcp} {
		// "not started" only happens for a server whose start failed.
		_ = srv.ShutdownContext(ctx)
	}
}

// listenPair binds addr on UDP and TCP. With port 0 both get the same free
// port.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("parse listen address %q: %w", addr, err)
	}
	attempts := 1
	if port == "0" {
		attempts = 20
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("listen tcp %s: %w", addr, lastErr)
}

// reply answers one query that a listener (a guest one when guest is set)
// admitted, cut to the size the client may get.
func (s *Server) reply(w dns.ResponseWriter, req *dns.Msg, guest bool) {
	rec := s.recursionFor(guest, addrIP(w.RemoteAddr()))
	resp := s.handle(w, req, rec)
	if resp == nil {
		return
	}
	resp.RecursionAvailable = rec
	_, overTCP := w.LocalAddr().(*net.TCPAddr)
	resp = bounded(req, resp, replyLimit(req, overTCP))
	if err := w.WriteMsg(resp); err != nil {
		s.cfg.Logf("dns: write reply to %v: %v", w.RemoteAddr(), err)
	}
}

// handle builds the reply to req; rec says whether names outside the zone
// may be forwarded for this client.
func (s *Server) handle(w dns.ResponseWriter, req *dns.Msg, rec bool) *dns.Msg {
	if req.Response {
		return nil // never answer answers
	}
	if req.Opcode != dns.OpcodeQuery {
		return errorReply(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return errorReply(req, dns.RcodeFormatError)
	}
	if inZone(req.Question[0].Name) {
		return withEDNS(req, s.zone.answer(req, addrIP(w.LocalAddr())))
	}
	if !rec {
		return errorReply(req, dns.RcodeRefused)
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		return errorReply(req, dns.RcodeServerFailure)
	}
	s.mu.Lock()
	fwd := s.fwd
	s.mu.Unlock()
	if fwd == nil {
		return errorReply(req, dns.RcodeServerFailure)
	}
	_, overTCP := w.LocalAddr().(*net.TCPAddr)
	resp, err := fwd.forward(s.ctx, req, overTCP)
	if err != nil {
		s.cfg.Logf("dns: %v", err)
		return errorReply(req, dns.RcodeServerFailure)
	}
	// EDNS is hop-by-hop: the upstream's OPT record (its buffer size and
	// options) is not the client's business, and ours replaces it.
	resp.Extra = slices.DeleteFunc(resp.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
	return withEDNS(req, resp)
}

func errorReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	return withEDNS(req, m)
}

// withEDNS adds an OPT record to our own replies when the query had one.
func withEDNS(req, resp *dns.Msg) *dns.Msg {
	if opt := req.IsEdns0(); opt != nil && resp.IsEdns0() == nil {
		resp.SetEdns0(maxUDPReply, false)
	}
	return resp
}

func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
