package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// restartDaemon stops this run's bangerd; the next CLI call starts a new
// one, which reads the config again.
func restartDaemon(t *testing.T) {
	t.Helper()
	pid := h.daemonPID()
	if pid == 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFileSync: [[file_sync]] copies a file with its mode and a directory
// tree from the owner's home; a host path outside the home and a symlink
// in a synced directory that points outside it are skipped with a note,
// and nothing outside the home reaches the guest.
func TestFileSync(t *testing.T) {
	defer group(t)()
	home := filepath.Join(h.root, "home")
	secret := filepath.Join(h.root, "outside-secret")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(home, "dots"), 0o755))
	must(os.WriteFile(secret, []byte("never-in-guest"), 0o600))
	must(os.WriteFile(filepath.Join(home, "synced.txt"), []byte("synced-content\n"), 0o600))
	must(os.WriteFile(filepath.Join(home, "dots", "a"), []byte("dot-a\n"), 0o644))
	must(os.Symlink(secret, filepath.Join(home, "dots", "escape")))
	cfg := filepath.Join(h.root, "config", "banger", "config.toml")
	must(os.MkdirAll(filepath.Dir(cfg), 0o700))
	must(os.WriteFile(cfg, []byte(`
[[file_sync]]
host = "~/synced.txt"
guest = "~/synced.txt"
mode = "0640"

[[file_sync]]
host = "~/dots"
guest = "~/dots"

[[file_sync]]
host = "`+secret+`"
guest = "~/stolen"
`), 0o600))
	t.Cleanup(func() {
		_ = os.Remove(cfg)
		restartDaemon(t)
	})
	restartDaemon(t)

	r := h.run("vm", "create", "--name", "fsync", "--image", "minimal")
	if r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	defer h.run("vm", "delete", "fsync")
	for _, want := range []string{"escape", "outside your home"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("create notes lack %q: %q", want, r.stderr)
		}
	}
	out := h.must(t, "vm", "exec", "fsync", "--", "sh", "-c",
		"stat -c %a /root/synced.txt; cat /root/synced.txt /root/dots/a; ls /root/dots; ls /root/stolen 2>&1; grep -r never-in-guest /root || echo clean")
	for _, want := range []string{"640\n", "synced-content\n", "dot-a\n", "clean\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest view lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "escape\n") || strings.Contains(out, "never-in-guest\n") {
		t.Errorf("something from outside the home reached the guest:\n%s", out)
	}
}
