package vmdns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ParseResolvConf returns the nameserver addresses of a resolv.conf(5) text
// as "ip:53" strings, in file order. Comments, other options and malformed
// nameserver lines are ignored.
func ParseResolvConf(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ap, err := NormalizeUpstream(f[1])
		if err != nil {
			continue
		}
		out = append(out, ap)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	return out, nil
}

// NormalizeUpstream turns "ip", "ip:port", "[ipv6]:port" or "ipv6%zone"
// into the "host:port" form, with port 53 by default.
func NormalizeUpstream(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("parse upstream %q: port 0", s)
		}
		return ap.String(), nil
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return "", fmt.Errorf("parse upstream %q: not an IP address or IP:port", s)
	}
	return netip.AddrPortFrom(ip, 53).String(), nil
}

// withoutSelf drops upstreams that are one of the server's own listening
// addresses: forwarding to ourselves would loop. An upstream matches a
// listener on the same port whose IP is equal or unspecified.
func withoutSelf(upstreams []string, self []netip.AddrPort) []string {
	var out []string
next:
	for _, u := range upstreams {
		ap, err := netip.ParseAddrPort(u)
		if err != nil {
			continue
		}
		for _, l := range self {
			if l.Port() != ap.Port() {
				continue
			}
			if l.Addr().Unmap() == ap.Addr().Unmap() || l.Addr().IsUnspecified() && (ap.Addr().IsLoopback() || ap.Addr().IsUnspecified()) {
				continue next
			}
		}
		out = append(out, u)
	}
	return out
}

// errNoUpstream is returned when forwarding is impossible.
var errNoUpstream = errors.New("no upstream resolver configured")

// forwarder sends queries outside the zone to upstream resolvers, in order,
// each attempt bounded by timeout: UDP first, TCP when the UDP answer is
// truncated (or at once when the client itself came over TCP).
type forwarder struct {
	upstreams []string
	timeout   time.Duration
}

func (f *forwarder) forward(ctx context.Context, req *dns.Msg, overTCP bool) (*dns.Msg, error) {
	if len(f.upstreams) == 0 {
		return nil, errNoUpstream
	}
	q := req.Copy()
	q.Id = dns.Id() // never reuse the client's ID upstream
	var last *dns.Msg
	var errs []error
	for _, up := range f.upstreams {
		r, err := f.try(ctx, q, up, overTCP)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		// A resolver that fails or refuses: give the next one a chance.
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			last = r
			continue
		}
		last = r
		break
	}
	if last == nil {
		return nil, fmt.Errorf("forward %s: %w", req.Question[0].Name, errors.Join(errs...))
	}
	last.Id = req.Id
	return last, nil
}

func (f *forwarder) try(ctx context.Context, q *dns.Msg, up string, overTCP bool) (*dns.Msg, error) {
	if !overTCP {
		r, err := f.exchange(ctx, "udp", q, up)
		if err != nil || !r.Truncated {
			return r, err
		}
		if rt, err := f.exchange(ctx, "tcp", q, up); err == nil {
			return rt, nil
		}
		// TCP failed: the truncated answer still tells the client to retry.
		return r, nil
	}
	return f.exchange(ctx, "tcp", q, up)
}

// exchange performs one query, bounded by f.timeout and by ctx (whose
// cancellation aborts the read at once).
func (f *forwarder) exchange(ctx context.Context, network string, q *dns.Msg, up string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, up)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s/%s: %w", network, up, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	cl := &dns.Client{Net: network, Timeout: f.timeout}
	r, _, err := cl.ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: c})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("query upstream %s/%s: %w", network, up, err)
	}
	return r, nil
}
