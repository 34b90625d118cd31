// Package netdev is the kernel side of banger's host networking: the bridge
// guests sit on, one persistent tap per VM owned by the VM owner's UID, the
// tap file descriptors handed to unprivileged VMMs, and banger's own
// nftables tables (guest egress filter, VM-to-VM policy, opt-in NAT).
//
// It runs in the root helper only. Everything goes through netlink and
// nftables netlink batches, never through ip(8) or nft(8), so the helper
// needs no shell and normally no binaries. The one exception is the
// firewall on a host whose kernel (or sandbox) refuses nftables netlink
// batches: then the same rules are built in banger's own iptables chains
// with the iptables tools, run as argv (xtables.go). Each Host probes once
// and keeps its choice; Backend reports it.
//
// A Host can be bound to a network namespace (NewInNetns); then every link,
// rule, sysctl, tap queue and iptables run it touches lives in that
// namespace, which is how banger runs its whole network inside a namespace
// and how the tests stay out of the machine's own one.
//
// Names are not validated here beyond what the kernel needs: the helper's
// ops validate names and prefixes and check its ledger before calling in.
package netdev

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Host performs network operations on the host, or inside one network
// namespace when made by NewInNetns. Its methods are safe for concurrent use;
// they are serialized, because most of them are check-then-act sequences
// that must not interleave.
type Host struct {
	mu sync.Mutex
	nl *netlink.Handle
	// ns is the target namespace, or -1 for the namespace the process
	// (more precisely: the calling thread) is in.
	ns netns.NsHandle
	// backend is the firewall backend, chosen at the first firewall
	// operation (chooseBackend); xt is set when it is BackendXtables.
	backend string
	xt      *xtables
}

// New returns a Host acting in the caller's network namespace.
func New() *Host {
	return &Host{nl: &netlink.Handle{}, ns: netns.None()}
}

// NewInNetns returns a Host whose every operation happens inside the network
// namespace at path (a bind mount such as /run/netns/NAME, or a
// /proc/PID/ns/net file). The namespace stays referenced until Close.
func NewInNetns(path string) (*Host, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open netlink in netns %s: %w", path, err)
	}
	return &Host{nl: h, ns: ns}, nil
}

// Close releases the namespace reference and netlink sockets. The Host must
// not be used afterwards. Closing a Host from New is a no-op.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ns.IsOpen() {
		h.nl.Close()
		err := h.ns.Close()
		h.ns = netns.None()
		h.nl = &netlink.Handle{}
		if err != nil {
			return fmt.Errorf("close netns: %w", err)
		}
	}
	return nil
}

// lock takes the Host's lock unless ctx is already done.
func (h *Host) lock(ctx context.Context) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	return h.mu.Unlock, nil
}

// inNetns runs fn on an OS thread that is inside the Host's namespace.
// Netlink sockets carry their namespace, but /dev/net/tun binds a queue to
// the namespace of the thread that opened it, and /proc/sys/net shows the
// namespace of the thread reading it, so those two need the thread switch.
func (h *Host) inNetns(fn func() error) error {
	if !h.ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is only handed back to the Go scheduler once it is
		// back in its original namespace; if restoring fails the goroutine
		// exits still locked and the runtime discards the thread.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// linkByName returns the named link, or nil when there is none.
func (h *Host) linkByName(name string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, err
	}
	return l, nil
}
