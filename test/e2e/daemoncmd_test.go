package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDaemonCommands stops and restarts bangerd through the CLI while a VM
// runs: the VM keeps running and is adopted by the next bangerd. Not
// parallel: it takes the shared daemon down.
func TestDaemonCommands(t *testing.T) {
	defer group(t)()
	h.must(t, "vm", "create", "--name", "steady")
	defer h.run("vm", "delete", "steady")
	vmPID := h.vms(t)["steady"].PID

	type status struct {
		Running bool `json:"running"`
		Daemon  *struct {
			PID     int    `json:"pid"`
			Version string `json:"version"`
			Managed string `json:"managed"`
		} `json:"daemon"`
	}
	read := func() status {
		t.Helper()
		var s status
		if err := json.Unmarshal([]byte(h.must(t, "daemon", "status", "--json")), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := read()
	if !before.Running || before.Daemon == nil || before.Daemon.PID != h.daemonPID() || before.Daemon.Managed != "" {
		t.Fatalf("status before = %+v (daemon pid %d)", before, h.daemonPID())
	}

	out := h.must(t, "daemon", "restart")
	after := read()
	if !strings.HasPrefix(out, "bangerd restarted: ") || after.Daemon == nil || after.Daemon.PID == before.Daemon.PID {
		t.Fatalf("restart: %q, status %+v", out, after)
	}
	if v := h.vms(t)["steady"]; v.State != "running" || v.PID != vmPID {
		t.Fatalf("after restart: state %q pid %d, want running pid %d", v.State, v.PID, vmPID)
	}

	if out := h.must(t, "daemon", "stop"); !strings.Contains(out, "stopped; running VMs keep running") {
		t.Fatalf("stop: %q", out)
	}
	if s := read(); s.Running || h.daemonPID() != 0 {
		t.Fatalf("status after stop = %+v (daemon pid %d)", s, h.daemonPID())
	}
	if out := h.must(t, "daemon", "stop"); out != "bangerd is not running\n" {
		t.Errorf("second stop: %q", out)
	}
	// The next command starts bangerd again, which adopts the VM.
	if out := h.must(t, "vm", "exec", "steady", "--", "echo", "alive"); out != "alive\n" {
		t.Fatalf("exec after stop = %q", out)
	}
}
