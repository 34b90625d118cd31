// Package procio holds the stdio handling the agent's exec op and its SSH
// server share for child processes.
package procio

import (
	"os"
	"sync"
	"time"
)

// Drain waits for the output pumps of an exited child to reach EOF, but at
// most grace: a background grandchild may hold the pipes open forever.
// After grace it closes the read ends, which unblocks the pumps (the files
// are in the runtime poller). The files are closed either way.
func Drain(pumps *sync.WaitGroup, outs []*os.File, grace time.Duration) {
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(grace):
		for _, f := range outs {
			_ = f.Close()
		}
		<-drained
	}
	for _, f := range outs {
		_ = f.Close()
	}
}
