package main

import (
	"errors"
	"sync"
	"time"
)

// guestPorts tracks the guest side of the agent's virtio-serial ports, the
// emulation's stand-in for a vsock listener. A port the guest agent has
// open is a pending accept: one host connection may be given to it. The
// agent reopens a port after each connection ends, so a port is handed out
// at most once per guest open, and never while a host still holds it.
type guestPorts struct {
	mu      sync.Mutex
	ports   map[int]*portState
	changed chan struct{} // closed and replaced on every change
}

type portState struct {
	open bool
	gen  uint64 // count of guest opens
	used uint64 // the gen last handed out
	busy bool   // a host connection holds the port
}

// errNoListener is how a connect ends when no guest port accepts in time,
// as Firecracker ends a host connection the guest did not accept.
var errNoListener = errors.New("no guest listener accepted the connection")

func newGuestPorts() *guestPorts {
	return &guestPorts{ports: map[int]*portState{}, changed: make(chan struct{})}
}

// set records the guest opening (open) or closing port i.
func (g *guestPorts) set(i int, open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.ports[i]
	if p == nil {
		p = &portState{}
		g.ports[i] = p
	}
	if open && !p.open {
		p.gen++
	}
	p.open = open
	close(g.changed)
	g.changed = make(chan struct{})
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
			p.busy, p.used = true, p.gen
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

// release ends the host's hold on port i.
func (g *guestPorts) release(i int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.ports[i]; p != nil {
		p.busy = false
		close(g.changed)
		g.changed = make(chan struct{})
	}
}
