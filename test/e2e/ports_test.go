package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPortsAndForward: a server in the guest shows up in vm ports with its
// NAME.vm endpoint, and vm forward makes it reachable on 127.0.0.1.
func TestPortsAndForward(t *testing.T) {
	t.Parallel()
	defer group(t)()
	h.must(t, "vm", "create", "--name", "fwd")
	defer h.run("vm", "delete", "fwd")
	h.must(t, "vm", "exec", "fwd", "--", "sh", "-c", "echo hello-from-guest > /root/index.html; httpd -p 8080 -h /root")
	ports := h.must(t, "vm", "ports", "fwd")
	if !strings.Contains(ports, "fwd.vm:8080") || !strings.Contains(ports, "httpd") {
		t.Fatalf("vm ports = %q, want httpd on fwd.vm:8080", ports)
	}
	cmd := exec.Command(filepath.Join(h.bin, "banger"), "vm", "forward", "fwd", "127.0.0.1:0:8080")
	cmd.Env = h.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("vm forward did not stop on SIGINT")
		}
	}()
	// "forwarding 127.0.0.1:PORT -> fwd:8080"
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil {
		t.Fatalf("read forward banner: %v", err)
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		t.Fatalf("forward banner = %q", line)
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + fields[1] + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello-from-guest\n" {
		t.Fatalf("forwarded body = %q", body)
	}
}
