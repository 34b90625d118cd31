package cli

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyInterrupt calls fn on SIGINT/SIGTERM until the returned stop func
// is called.
func notifyInterrupt(fn func()) func() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			fn()
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
