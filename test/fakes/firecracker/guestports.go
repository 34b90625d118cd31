package main

import (
	"errors"
	"sync"
	"time"
)

// guestPorts tracks the guest side of the agent's virtio-serial ports, the
// emulation's stand-in for a vsock listener. A port the guest agent has
// open is a pending accept: one host connection may be given to it. The
// agent reopens a port after each connection that reached it ends, so a
// port is handed out at most once per guest open, and never while a host
// still holds it.
//
// The guest's opens are learnt from QEMU's VSERPORT_CHANGE events, which
// QEMU throttles to one a second per port, delivering only the latest
// state at the end of each second. A close and reopen within a second
// (the agent's turnaround after a session) thus arrives as a lone open,
// possibly a repeat of the state already known; no open is ever reported
// twice, so each reported open counts as a fresh one.
type guestPorts struct {
	mu      sync.Mutex
	ports   map[int]*portState
	changed chan struct{} // closed and replaced on every change
}

type portState struct {
	open bool
	gen  uint64 // count of guest opens reported
	used uint64 // the gen last handed out
	busy bool   // a host connection holds the port
	prev uint64 // used before the current hold began
}

// errNoListener is how a connect ends when no guest port accepts in time,
// as Firecracker ends a host connection the guest did not accept.
var errNoListener = errors.New("no guest listener accepted the connection")

func newGuestPorts() *guestPorts {
	return &guestPorts{ports: map[int]*portState{}, changed: make(chan struct{})}
}

// set records a VSERPORT_CHANGE for port i: the guest opened (open) or
// closed it, at least once since the previous report.
func (g *guestPorts) set(i int, open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.ports[i]
	if p == nil {
		p = &portState{}
		g.ports[i] = p
	}
	if open {
		p.gen++
	}
	p.open = open
	g.notify()
}

// acquire waits up to timeout for a port the guest has accepted on and no
// host holds, marks it held and returns it. Lower ports go first.
func (g *guestPorts) acquire(timeout time.Duration) (int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		best := -1
		for i, p := range g.ports {
			if p.open && !p.busy && p.gen > p.used && (best < 0 || i < best) {
				best = i
			}
		}
		if best >= 0 {
			p := g.ports[best]
			p.busy, p.prev, p.used = true, p.used, p.gen
			g.mu.Unlock()
			return best, nil
		}
		changed := g.changed
		g.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return -1, errNoListener
		}
	}
}

// release ends the host's hold on port i. reached says whether any byte
// of the host's went to the guest: the agent serves a port only once a
// host has written to it, so a connection that wrote nothing left the
// guest's open untouched, and it is pending again.
func (g *guestPorts) release(i int, reached bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.ports[i]; p != nil && p.busy {
		p.busy = false
		if !reached {
			p.used = p.prev
		}
		g.notify()
	}
}

// notify wakes acquire calls waiting for a change; g.mu is held.
func (g *guestPorts) notify() {
	close(g.changed)
	g.changed = make(chan struct{})
}
