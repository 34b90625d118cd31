package vm

import (
	"net/netip"

	"banger/internal/store"
)

// dnsRecursion is the DNS server's per-guest switch for names outside .vm
// (vmdns.Server has it). A DNS without it grants nobody: guests then get
// .vm names only, which fails closed.
type dnsRecursion interface {
	SetRecursion(ip netip.Addr, on bool)
}

// grantDNS tells the DNS server whether the guest v may have names outside
// .vm resolved on the gateway: only while it runs with NAT. A guest without
// NAT has no route out, and DNS must not become one (names carry data both
// ways). Called where the VM's name is published and withdrawn, so the
// grant follows the same running VMs, adoption after a restart included.
func (s *Service) grantDNS(v store.VM, running bool) {
	if s.net == nil {
		return
	}
	r, ok := s.net.DNS.(dnsRecursion)
	if !ok {
		return
	}
	ip, err := netip.ParseAddr(v.GuestIP)
	if err != nil {
		return
	}
	r.SetRecursion(ip, running && v.NAT)
}
