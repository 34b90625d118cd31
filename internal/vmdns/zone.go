package vmdns

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"banger/internal/namegen"
)

// Apex is the zone the server is authoritative for, in canonical form.
const Apex = "vm."

// Names at the apex. The NS target lives inside the zone; a query for its A
// record is answered with the address the query arrived on, unless a VM
// of that name exists (the VM wins).
const (
	nsName     = "ns." + Apex
	hostmaster = "hostmaster." + Apex
)

// SOA timers. Records change whenever a VM starts or stops, so everything
// is short-lived.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
	// negativeTTL is the SOA minimum: how long resolvers may cache an
	// NXDOMAIN for a VM that does not exist yet.
	negativeTTL = 5
)

// zone holds the A records of zone vm.: one label per VM.
type zone struct {
	ttl uint32

	mu      sync.RWMutex
	records map[string]netip.Addr // lower-case label -> IPv4
	serial  uint32
}

func newZone(ttl uint32) *zone {
	return &zone{ttl: ttl, records: map[string]netip.Addr{}, serial: uint32(time.Now().Unix())}
}

// canonicalLabel turns a VM name ("web", "Web", "web.vm", "web.vm.") into
// its zone label, or fails for a name that is not a valid VM name.
func canonicalLabel(name string) (string, error) {
	label := strings.ToLower(strings.TrimSuffix(name, "."))
	label = strings.TrimSuffix(label, "."+strings.TrimSuffix(Apex, "."))
	if err := namegen.Validate(label); err != nil {
		return "", fmt.Errorf("check dns name: %w", err)
	}
	return label, nil
}

// canonicalIPv4 returns ip as a plain IPv4 address (4-in-6 is unmapped).
func canonicalIPv4(ip netip.Addr) (netip.Addr, error) {
	ip = ip.Unmap()
	if !ip.Is4() || ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("check dns address %v: not a usable IPv4 address", ip)
	}
	return ip, nil
}

func (z *zone) set(name string, ip netip.Addr) error {
	label, err := canonicalLabel(name)
	if err != nil {
		return err
	}
	if ip, err = canonicalIPv4(ip); err != nil {
		return err
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if old, ok := z.records[label]; !ok || old != ip {
		z.records[label] = ip
		z.serial++
	}
	return nil
}

func (z *zone) remove(name string) bool {
	label, err := canonicalLabel(name)
	if err != nil {
		return false
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if _, ok := z.records[label]; !ok {
		return false
	}
	delete(z.records, label)
	z.serial++
	return true
}

// replace swaps in a whole new record set. Nothing changes if any entry is
// invalid.
func (z *zone) replace(m map[string]netip.Addr) error {
	next := make(map[string]netip.Addr, len(m))
	for name, ip := range m {
		label, err := canonicalLabel(name)
		if err != nil {
			return err
		}
		if ip, err = canonicalIPv4(ip); err != nil {
			return fmt.Errorf("record %q: %w", name, err)
		}
		next[label] = ip
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if !maps.Equal(next, z.records) {
		z.records = next
		z.serial++
	}
	return nil
}

func (z *zone) lookup(name string) (netip.Addr, bool) {
	label, err := canonicalLabel(name)
	if err != nil {
		return netip.Addr{}, false
	}
	z.mu.RLock()
	defer z.mu.RUnlock()
	ip, ok := z.records[label]
	return ip, ok
}

func (z *zone) snapshot() map[string]netip.Addr {
	z.mu.RLock()
	defer z.mu.RUnlock()
	return maps.Clone(z.records)
}

// inZone reports whether the (any case) query name is the apex or below it.
func inZone(qname string) bool {
	n := strings.ToLower(dns.Fqdn(qname))
	return n == Apex || strings.HasSuffix(n, "."+Apex)
}

// answer builds the authoritative reply to req, whose single question is
// inside the zone. local is the address the query arrived on (used for the
// NS target's A record; may be the zero Addr).
func (z *zone) answer(req *dns.Msg, local netip.Addr) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	q := req.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	z.mu.RLock()
	defer z.mu.RUnlock()
	soa := z.soa()

	name := strings.ToLower(dns.Fqdn(q.Name))
	if name == Apex {
		switch q.Qtype {
		case dns.TypeSOA:
			m.Answer = append(m.Answer, withName(soa, q.Name))
		case dns.TypeNS:
			m.Answer = append(m.Answer, withName(z.ns(), q.Name))
		case dns.TypeANY:
			m.Answer = append(m.Answer, withName(soa, q.Name), withName(z.ns(), q.Name))
		default:
			m.Ns = append(m.Ns, soa)
		}
		return m
	}

	label := strings.TrimSuffix(name, "."+Apex)
	ip, ok := z.records[label]
	if !ok && name == nsName && local.Is4() && !local.IsUnspecified() {
		ip, ok = local, true
	}
	if !ok {
		// Unknown names, and anything below a VM's name, do not exist.
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
		return m
	}
	switch q.Qtype {
	case dns.TypeA, dns.TypeANY:
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: z.ttl},
			A:   ip.AsSlice(),
		})
	default:
		// The name exists but has no data of this type (AAAA included).
		m.Ns = append(m.Ns, soa)
	}
	return m
}

// soa returns the apex SOA record. Callers hold z.mu.
func (z *zone) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: Apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: negativeTTL},
		Ns:      nsName,
		Mbox:    hostmaster,
		Serial:  z.serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  negativeTTL,
	}
}

func (z *zone) ns() *dns.NS {
	return &dns.NS{
		Hdr: dns.RR_Header{Name: Apex, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: z.ttl},
		Ns:  nsName,
	}
}

// withName returns rr owned by name, so that answers echo the query's case.
func withName(rr dns.RR, name string) dns.RR {
	rr.Header().Name = name
	return rr
}
