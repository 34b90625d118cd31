package vmdns

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func testZone(t *testing.T) *zone {
	t.Helper()
	z := newZone(10)
	if err := z.replace(map[string]netip.Addr{
		"web": netip.MustParseAddr("172.16.0.2"),
		"db":  netip.MustParseAddr("::ffff:172.16.0.3"), // unmapped to IPv4
	}); err != nil {
		t.Fatal(err)
	}
	return z
}

func TestZoneAnswer(t *testing.T) {
	z := testZone(t)
	local := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name      string
		qname     string
		qtype     uint16
		qclass    uint16
		local     netip.Addr
		rcode     int
		answer    []string // "TYPE value" of each answer RR
		soaInAuth bool
	}{
		{name: "A", qname: "web.vm.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answer: []string{"A 172.16.0.2"}},
		{name: "mapped address stored as IPv4", qname: "db.vm.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answer: []string{"A 172.16.0.3"}},
		{name: "case insensitive", qname: "WeB.Vm.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answer: []string{"A 172.16.0.2"}},
		{name: "ANY on a VM", qname: "web.vm.", qtype: dns.TypeANY, rcode: dns.RcodeSuccess, answer: []string{"A 172.16.0.2"}},
		{name: "AAAA is NODATA", qname: "web.vm.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, soaInAuth: true},
		{name: "MX is NODATA", qname: "web.vm.", qtype: dns.TypeMX, rcode: dns.RcodeSuccess, soaInAuth: true},
		{name: "unknown name", qname: "nope.vm.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "unknown name AAAA", qname: "nope.vm.", qtype: dns.TypeAAAA, rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "below a VM", qname: "x.web.vm.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "apex SOA", qname: "vm.", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, answer: []string{"SOA ns.vm. hostmaster.vm."}},
		{name: "apex SOA any case", qname: "VM.", qtype: dns.TypeSOA, rcode: dns.RcodeSuccess, answer: []string{"SOA ns.vm. hostmaster.vm."}},
		{name: "apex NS", qname: "vm.", qtype: dns.TypeNS, rcode: dns.RcodeSuccess, answer: []string{"NS ns.vm."}},
		{name: "apex ANY", qname: "vm.", qtype: dns.TypeANY, rcode: dns.RcodeSuccess, answer: []string{"SOA ns.vm. hostmaster.vm.", "NS ns.vm."}},
		{name: "apex A is NODATA", qname: "vm.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, soaInAuth: true},
		{name: "NS target answers with the local address", qname: "ns.vm.", qtype: dns.TypeA, local: local, rcode: dns.RcodeSuccess, answer: []string{"A 127.0.0.1"}},
		{name: "NS target without a local address", qname: "ns.vm.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "NS target on a wildcard listener", qname: "ns.vm.", qtype: dns.TypeA, local: netip.IPv4Unspecified(), rcode: dns.RcodeNameError, soaInAuth: true},
		{name: "CHAOS class refused", qname: "web.vm.", qtype: dns.TypeA, qclass: dns.ClassCHAOS, rcode: dns.RcodeRefused},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := new(dns.Msg)
			req.SetQuestion(c.qname, c.qtype)
			if c.qclass != 0 {
				req.Question[0].Qclass = c.qclass
			}
			m := z.answer(req, c.local)
			if m.Rcode != c.rcode {
				t.Fatalf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
			}
			if m.Id != req.Id || !m.Response {
				t.Fatalf("not a reply to the request: %v", m)
			}
			if c.rcode != dns.RcodeRefused && !m.Authoritative {
				t.Fatal("AA not set")
			}
			var got []string
			for _, rr := range m.Answer {
				if rr.Header().Name != c.qname {
					t.Errorf("owner %q, want the query's %q", rr.Header().Name, c.qname)
				}
				got = append(got, describe(rr))
			}
			if strings.Join(got, "|") != strings.Join(c.answer, "|") {
				t.Errorf("answer = %q, want %q", got, c.answer)
			}
			hasSOA := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != c.soaInAuth {
				t.Errorf("authority = %v, want SOA: %v", m.Ns, c.soaInAuth)
			}
		})
	}
}

func describe(rr dns.RR) string {
	switch rr := rr.(type) {
	case *dns.A:
		return "A " + rr.A.String()
	case *dns.NS:
		return "NS " + rr.Ns
	case *dns.SOA:
		return "SOA " + rr.Ns + " " + rr.Mbox
	}
	return rr.String()
}

func TestNSNameBelongsToAVMOfThatName(t *testing.T) {
	z := testZone(t)
	if err := z.set("ns", netip.MustParseAddr("172.16.0.9")); err != nil {
		t.Fatal(err)
	}
	req := new(dns.Msg)
	req.SetQuestion("ns.vm.", dns.TypeA)
	m := z.answer(req, netip.MustParseAddr("127.0.0.1"))
	if len(m.Answer) != 1 || describe(m.Answer[0]) != "A 172.16.0.9" {
		t.Fatalf("answer = %v", m.Answer)
	}
}

func TestCanonicalLabel(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"web", "web", true},
		{"Web-1", "web-1", true},
		{"web.vm", "web", true},
		{"WEB.VM.", "web", true},
		{"vm", "vm", true},
		{"", "", false},
		{"-web", "", false},
		{"web-", "", false},
		{"a.b", "", false},
		{"a.b.vm", "", false},
		{"web_1", "", false},
		{strings.Repeat("a", 64), "", false},
	}
	for _, c := range cases {
		got, err := canonicalLabel(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("canonicalLabel(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestCanonicalIPv4(t *testing.T) {
	cases := []struct {
		in   netip.Addr
		want string
		ok   bool
	}{
		{netip.MustParseAddr("10.0.0.1"), "10.0.0.1", true},
		{netip.MustParseAddr("::ffff:10.0.0.1"), "10.0.0.1", true},
		{netip.MustParseAddr("fd00::1"), "", false},
		{netip.IPv4Unspecified(), "", false},
		{netip.Addr{}, "", false},
	}
	for _, c := range cases {
		got, err := canonicalIPv4(c.in)
		if (err == nil) != c.ok || c.ok && got.String() != c.want {
			t.Errorf("canonicalIPv4(%v) = %v, %v; want %s ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestZoneMutations(t *testing.T) {
	z := newZone(10)
	serial := func() uint32 { z.mu.RLock(); defer z.mu.RUnlock(); return z.serial }
	s0 := serial()
	ip := netip.MustParseAddr("10.1.0.2")
	if err := z.set("Web", ip); err != nil {
		t.Fatal(err)
	}
	if got, ok := z.lookup("web.vm."); !ok || got != ip {
		t.Fatalf("lookup = %v %v", got, ok)
	}
	s1 := serial()
	if s1 == s0 {
		t.Error("serial unchanged after set")
	}
	if err := z.set("web", ip); err != nil || serial() != s1 {
		t.Errorf("setting the same record changed the serial (err %v)", err)
	}
	if err := z.set("bad name", ip); err == nil {
		t.Error("set accepted an invalid name")
	}
	if err := z.set("v6", netip.MustParseAddr("fd00::2")); err == nil {
		t.Error("set accepted an IPv6 address")
	}
	// Replace is all or nothing.
	err := z.replace(map[string]netip.Addr{"a": ip, "b_": ip})
	if err == nil {
		t.Fatal("replace accepted an invalid name")
	}
	if _, ok := z.lookup("web"); !ok || len(z.snapshot()) != 1 {
		t.Fatalf("failed replace changed the zone: %v", z.snapshot())
	}
	if err := z.replace(map[string]netip.Addr{"A": ip, "b": netip.MustParseAddr("10.1.0.3")}); err != nil {
		t.Fatal(err)
	}
	if _, ok := z.lookup("web"); ok {
		t.Error("replace kept an old record")
	}
	if !z.remove("a") || z.remove("a") {
		t.Error("remove did not report existence correctly")
	}
	if got := z.snapshot(); len(got) != 1 || got["b"] != netip.MustParseAddr("10.1.0.3") {
		t.Errorf("snapshot = %v", got)
	}
}

func TestInZone(t *testing.T) {
	for name, want := range map[string]bool{
		"vm.": true, "VM": true, "a.vm.": true, "a.b.Vm.": true,
		"vm.example.": false, "avm.": false, "example.com.": false, ".": false,
	} {
		if got := inZone(name); got != want {
			t.Errorf("inZone(%q) = %v, want %v", name, got, want)
		}
	}
}
