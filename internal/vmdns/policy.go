package vmdns

import (
	"net/netip"

	"github.com/miekg/dns"
)

// Who gets what. Names in the zone are answered for every admitted client.
// Names outside it are forwarded only for a client on a guest listener whose
// address was granted recursion (SetRecursion: the guests with NAT, which
// reach the outside world anyway). Everyone else gets REFUSED without the
// upstreams being asked: a guest without NAT must not tunnel out through
// DNS, and the host's own resolver (the loopback listener) sends only .vm
// here and resolves everything else itself.

// Reply size bounds. A UDP reply fits the client's EDNS buffer, but no more
// than maxUDPReply (the size DNS flag day 2020 settled on, which avoids IP
// fragmentation), and 512 bytes for a client without EDNS. A TCP reply is
// at most maxTCPReply. Larger answers are cut at a record boundary and
// marked truncated (TC).
const (
	maxUDPReply = 1232
	maxTCPReply = 16 << 10
	// maxTCPConns bounds concurrent TCP connections per listener.
	maxTCPConns = 64
)

// SetRecursion grants (on) or withdraws the right of the guest at ip to
// have names outside the zone resolved through the gateway listeners.
func (s *Server) SetRecursion(ip netip.Addr, on bool) {
	ip = ip.Unmap()
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if on {
		s.recursive[ip] = true
	} else {
		delete(s.recursive, ip)
	}
}

// recursionFor reports whether a client at src on a listener (guest or not)
// may have names outside the zone forwarded.
func (s *Server) recursionFor(guest bool, src netip.Addr) bool {
	if !guest || !src.IsValid() {
		return false
	}
	s.recMu.RLock()
	defer s.recMu.RUnlock()
	return s.recursive[src.Unmap()]
}

// replyLimit is the largest reply the client may get.
func replyLimit(req *dns.Msg, overTCP bool) int {
	if overTCP {
		return maxTCPReply
	}
	return min(udpSize(req), maxUDPReply)
}

// bounded cuts resp to limit bytes at a record boundary, marking it
// truncated. A reply that still does not fit (its question and OPT record
// alone are too big) becomes SERVFAIL.
func bounded(req, resp *dns.Msg, limit int) *dns.Msg {
	resp.Truncate(limit)
	if resp.Len() <= limit {
		return resp
	}
	fail := errorReply(req, dns.RcodeServerFailure)
	fail.RecursionAvailable = resp.RecursionAvailable
	return fail
}

// udpSize is the largest reply the client accepts over UDP.
func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > dns.MinMsgSize {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}
