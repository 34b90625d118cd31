package client

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/privop"
)

// A helper that takes a request and never answers makes the call fail at
// its deadline with the context's error (it once panicked on the read
// error's n of -1).
func TestCallTimesOutOnASilentHelper(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "h.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		_, _ = c.Read(buf)
		time.Sleep(5 * time.Second)
	}()
	c := &Client{Socket: sock, HelperUID: uint32(os.Getuid())}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, f, err := c.Call(ctx, privop.Ping{})
	if f != nil {
		f.Close()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want the deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s for a 200ms deadline", took)
	}
}
