package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestGuestPorts plays sequences of guest port reports (QEMU's throttled
// VSERPORT_CHANGE) and host connections, and checks which connections the
// fake answers. Steps: "open N"/"close N" is a report for port N; "get N"
// is a connect that must be given port N; "none" a connect that must find
// no port; "done N" ends the host's hold on port N after it wrote, "quiet
// N" after it wrote nothing.
func TestGuestPorts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"an open port is handed out once", []string{"open 0", "get 0", "done 0", "none"}},
		{"a port closed is not handed out", []string{"open 0", "close 0", "none"}},
		{"a held port is not handed out", []string{"open 0", "get 0", "none"}},
		{"lower ports go first", []string{"open 2", "open 1", "get 1", "get 2", "none"}},
		{"a reopen reported as close then open", []string{"open 0", "get 0", "done 0", "close 0", "none", "open 0", "get 0"}},
		// QEMU reports only the last state of a second: the agent's close
		// and reopen after a session arrive as one more open.
		{"a throttled reopen is a repeated open", []string{"open 0", "get 0", "done 0", "open 0", "get 0", "done 0", "open 0", "get 0"}},
		// The agent reopened the port while the host still held it (its
		// session ended first): that open is pending once the host lets go.
		{"a reopen while held counts after release", []string{"open 0", "get 0", "open 0", "none", "done 0", "get 0"}},
		// A host that wrote nothing never woke the agent, which still waits
		// on the same open.
		{"a host that wrote nothing leaves the open pending", []string{"open 0", "get 0", "quiet 0", "get 0", "done 0", "none"}},
		{"several hosts that wrote nothing", []string{"open 1", "get 1", "quiet 1", "get 1", "quiet 1", "get 1", "done 1", "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuestPorts()
			for i, step := range tc.steps {
				var verb string
				var port int
				if step != "none" {
					if _, err := fmt.Sscan(step, &verb, &port); err != nil {
						t.Fatalf("step %q: %v", step, err)
					}
				} else {
					verb = "none"
				}
				switch verb {
				case "open", "close":
					g.set(port, verb == "open")
				case "get":
					got, err := g.acquire(time.Second)
					if err != nil || got != port {
						t.Fatalf("step %d (%s): acquire = %d, %v", i, step, got, err)
					}
				case "none":
					if got, err := g.acquire(50 * time.Millisecond); !errors.Is(err, errNoListener) {
						t.Fatalf("step %d: acquire = %d, %v, want %v", i, got, err, errNoListener)
					}
				case "done", "quiet":
					g.release(port, verb == "done")
				default:
					t.Fatalf("bad step %q", step)
				}
			}
		})
	}
}

// TestGuestPortsWakeAWaitingConnect: a connect waiting for the guest is
// answered as soon as a port opens, within the accept timeout.
func TestGuestPortsWakeAWaitingConnect(t *testing.T) {
	g := newGuestPorts()
	got := make(chan int, 1)
	go func() {
		p, err := g.acquire(5 * time.Second)
		if err != nil {
			p = -1
		}
		got <- p
	}()
	time.Sleep(50 * time.Millisecond)
	g.set(3, true)
	select {
	case p := <-got:
		if p != 3 {
			t.Fatalf("acquire = %d, want 3", p)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("an open port did not wake a waiting connect")
	}
}

// TestHeldPortReportsWhetherTheHostWrote: closing a host connection tells
// the port's release whether any byte of it went to the guest.
func TestHeldPortReportsWhetherTheHostWrote(t *testing.T) {
	for _, write := range []bool{false, true} {
		a, b := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		var calls []bool
		h := &heldPort{Conn: a, release: func(reached bool) { calls = append(calls, reached) }}
		if write {
			if _, err := h.Write([]byte("BANGER-SYNC 0123456789abcdef\n")); err != nil {
				t.Fatal(err)
			}
		}
		h.Close()
		h.Close()
		b.Close()
		if len(calls) != 1 || calls[0] != write {
			t.Errorf("wrote %v: release calls %v, want one with %v", write, calls, write)
		}
	}
}
