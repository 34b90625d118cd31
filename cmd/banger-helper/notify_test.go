package main

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestNotifyReady: with NOTIFY_SOCKET set, the helper sends READY=1 there
// (what Type=notify waits for before starting bangerd); without it,
// nothing is sent and nothing fails.
func TestNotifyReady(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := notifyReady(); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	for _, abstract := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "notify")
		name, env := path, path
		if abstract {
			name, env = "\x00banger-notify-test-"+filepath.Base(filepath.Dir(path)), "@banger-notify-test-"+filepath.Base(filepath.Dir(path))
		}
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", env)
		if err := notifyReady(); err != nil {
			t.Fatalf("abstract=%v: %v", abstract, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || string(buf[:n]) != "READY=1" {
			t.Fatalf("abstract=%v: systemd got %q (%v), want READY=1", abstract, buf[:n], err)
		}
	}
}
