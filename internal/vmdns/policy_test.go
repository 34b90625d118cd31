package vmdns

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A guest without recursion (no NAT) gets the zone and REFUSED for anything
// else, and the upstream never hears of it; a granted guest is forwarded;
// the host's listener never forwards.
func TestRecursionOnlyForGrantedGuests(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, Config{Upstreams: []string{up.addr}, GuestSubnet: netip.MustParsePrefix("127.0.0.0/8")})
	if err := s.Set("web", netip.MustParseAddr("172.16.0.2")); err != nil {
		t.Fatal(err)
	}
	gw, err := s.AddListener("127.0.0.3:0")
	if err != nil {
		t.Skipf("no 127.0.0.3 here: %v", err)
	}
	guest := netip.MustParseAddr("127.0.0.2")
	ask := func(network string, to netip.AddrPort, name string) *dns.Msg {
		t.Helper()
		raw := exchangeFrom(t, network, guest.String(), to, question(name, dns.TypeA), 5*time.Second)
		if raw == nil {
			t.Fatalf("%s %s: no answer", network, name)
		}
		return unpack(t, raw)
	}
	upstreamQueries := func() int32 { return up.udp.Load() + up.tcp.Load() }

	for _, network := range []string{"udp", "tcp"} {
		if r := ask(network, gw, "web.vm."); len(r.Answer) != 1 || r.RecursionAvailable {
			t.Errorf("%s: zone answer for a guest without NAT: %v", network, r)
		}
		if r := ask(network, gw, "example.com."); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s: example.com for a guest without NAT: %v", network, r)
		}
	}
	if n := upstreamQueries(); n != 0 {
		t.Fatalf("upstream asked %d times for a guest without NAT", n)
	}

	s.SetRecursion(guest, true)
	if r := ask("udp", gw, "example.com."); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !r.RecursionAvailable {
		t.Errorf("example.com for a guest with NAT: %v", r)
	}
	if n := upstreamQueries(); n != 1 {
		t.Fatalf("upstream asked %d times, want 1", n)
	}
	// The host's resolver sends only .vm here, whoever is granted what.
	s.SetRecursion(netip.MustParseAddr("127.0.0.1"), true)
	raw := exchangeFrom(t, "udp", "127.0.0.1", s.Addrs()[0], question("example.com.", dns.TypeA), 5*time.Second)
	if raw == nil || unpack(t, raw).Rcode != dns.RcodeRefused {
		t.Errorf("host listener forwarded: %v", raw)
	}

	s.SetRecursion(guest, false)
	if r := ask("udp", gw, "example.com."); r.Rcode != dns.RcodeRefused {
		t.Errorf("after the grant was withdrawn: %v", r)
	}
	if n := upstreamQueries(); n != 1 {
		t.Fatalf("upstream asked %d times, want still 1", n)
	}
}

// Replies are cut to the client's EDNS size but no more than 1232 bytes
// over UDP, 512 without EDNS, and 16 KiB over TCP, with TC set.
func TestReplySizeBounded(t *testing.T) {
	up := startUpstream(t)
	_, gw := guestServer(t, Config{Upstreams: []string{up.addr}})
	edns := func(name string, size uint16) *dns.Msg {
		m := question(name, dns.TypeA)
		m.SetEdns0(size, false)
		return m
	}
	cases := []struct {
		name    string
		network string
		q       *dns.Msg
		limit   int
	}{
		{"udp edns 4096", "udp", edns("big.example.", 4096), maxUDPReply},
		{"udp edns 800", "udp", edns("big.example.", 800), 800},
		{"udp no edns", "udp", question("big.example.", dns.TypeA), dns.MinMsgSize},
		{"tcp", "tcp", question("huge.example.", dns.TypeA), maxTCPReply},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := exchangeFrom(t, c.network, "127.0.0.1", gw, c.q, 5*time.Second)
			if raw == nil {
				t.Fatal("no answer")
			}
			r := unpack(t, raw)
			if len(raw) > c.limit {
				t.Fatalf("reply of %d bytes, limit %d", len(raw), c.limit)
			}
			if !r.Truncated || len(r.Answer) == 0 || r.Rcode != dns.RcodeSuccess {
				t.Fatalf("want a truncated answer with what fits: TC=%v, %d answers, %s", r.Truncated, len(r.Answer), dns.RcodeToString[r.Rcode])
			}
			if opt := r.IsEdns0(); c.q.IsEdns0() != nil && (opt == nil || int(opt.UDPSize()) != maxUDPReply) {
				t.Errorf("EDNS of the reply: %v", opt)
			}
		})
	}
}

func TestReplyLimit(t *testing.T) {
	edns := func(size uint16) *dns.Msg {
		m := question("x.", dns.TypeA)
		m.SetEdns0(size, false)
		return m
	}
	cases := []struct {
		name  string
		req   *dns.Msg
		tcp   bool
		limit int
	}{
		{"no edns", question("x.", dns.TypeA), false, 512},
		{"edns below 512", edns(100), false, 512},
		{"edns 1000", edns(1000), false, 1000},
		{"edns 65535 capped", edns(65535), false, maxUDPReply},
		{"tcp", edns(512), true, maxTCPReply},
	}
	for _, c := range cases {
		if got := replyLimit(c.req, c.tcp); got != c.limit {
			t.Errorf("%s: %d, want %d", c.name, got, c.limit)
		}
	}
}

// A reply that cannot be cut down to the limit becomes SERVFAIL.
func TestBoundedServfail(t *testing.T) {
	req := question("x.", dns.TypeA)
	resp := new(dns.Msg)
	resp.SetReply(req)
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 2000)})
	resp.Extra = append(resp.Extra, opt)
	got := bounded(req, resp, 512)
	if got.Rcode != dns.RcodeServerFailure || got.Len() > 512 {
		t.Fatalf("oversized reply: rcode %s, %d bytes", dns.RcodeToString[got.Rcode], got.Len())
	}
}
