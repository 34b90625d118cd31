package main

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
)

// cleanups holds what the bench must undo however it ends: normally, on
// an error, or on SIGINT or SIGTERM (Ctrl-C), when they run from the
// signal handler and the bench exits 130.
type cleanups struct {
	mu  sync.Mutex
	fns []*func()
}

var cl cleanups

// add registers f, to run last-in first-out at exit. done(true) runs it
// now instead (once), done(false) drops it.
func (c *cleanups) add(f func()) (done func(run bool)) {
	p := &f
	c.mu.Lock()
	c.fns = append(c.fns, p)
	c.mu.Unlock()
	return func(run bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.fns, p)
		if i < 0 {
			return
		}
		c.fns = slices.Delete(c.fns, i, i+1)
		if run {
			f()
		}
	}
}

// runAll runs every registered cleanup, newest first.
func (c *cleanups) runAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.fns) > 0 {
		p := c.fns[len(c.fns)-1]
		c.fns = c.fns[:len(c.fns)-1]
		(*p)()
	}
}

// handleSignals runs the cleanups and exits on SIGINT or SIGTERM.
func handleSignals() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench: %v: cleaning up\n", s)
		cl.runAll()
		os.Exit(130)
	}()
}
