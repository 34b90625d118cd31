package transport

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for name, port := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": "banger.agent"} {
		dir := filepath.Join(sys, "class", "virtio-ports", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "name"), []byte(port+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v := &VirtioSerial{Name: "banger.agent", SysRoot: sys, DevRoot: "/dev"}
	got, err := v.FindPort()
	if err != nil || got != "/dev/vport1p1" {
		t.Fatalf("FindPort = %q, %v", got, err)
	}
	v.Name = "missing"
	if _, err := v.FindPort(); err == nil {
		t.Fatal("found a port that does not exist")
	}
}

func TestNewRejectsUnknown(t *testing.T) {
	if _, err := New("carrier-pigeon"); err == nil {
		t.Fatal("unknown transport accepted")
	}
	if _, err := New("vsock"); err == nil {
		t.Fatal("vsock is not implemented yet")
	}
}
