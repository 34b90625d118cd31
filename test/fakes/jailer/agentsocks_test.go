package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAgentSocketsOutliveTheirFiles: once held, QEMU's agent sockets stay
// reachable after their directory is emptied (systemd clears the helper's
// private /tmp when its unit stops, with VMs still running); without the
// hold, the same dial finds nothing.
func TestAgentSocketsOutliveTheirFiles(t *testing.T) {
	for _, hold := range []bool{true, false} {
		dir := t.TempDir()
		sock := filepath.Join(dir, "agent0.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("agent\n"))
				c.Close()
			}
		}()
		vm := &qemuVM{agentSocks: []string{sock}}
		if hold {
			if err := vm.holdAgentSocks(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, fd := range vm.agentHeld {
					_ = unix.Close(fd)
				}
			})
		}
		if err := os.Remove(sock); err != nil {
			t.Fatal(err)
		}
		c, err := net.DialTimeout("unix", vm.agentAddr(0), 2*time.Second)
		if !hold {
			if err == nil {
				c.Close()
				t.Fatal("dialled a removed socket without holding it: the test proves nothing")
			}
			continue
		}
		if err != nil {
			t.Fatalf("dial a held agent socket after its file is gone: %v", err)
		}
		buf := make([]byte, 6)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		c.Close()
		if string(buf[:n]) != "agent\n" {
			t.Fatalf("read %q, %v from the held socket", buf[:n], err)
		}
	}
}
