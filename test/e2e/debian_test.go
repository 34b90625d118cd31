package e2e

import (
	"os"
	"strings"
	"testing"
)

// TestDebianImage builds the Debian dev image with debootstrap and boots it:
// systemd is PID 1 and the agent runs as a service under it. It needs root
// (debootstrap) and the Debian mirror, so it runs only with
// BANGER_E2E_DEBOOTSTRAP=1 (make test sets it when run as root).
func TestDebianImage(t *testing.T) {
	defer group(t)()
	if os.Getenv("BANGER_E2E_DEBOOTSTRAP") != "1" {
		t.Skip("set BANGER_E2E_DEBOOTSTRAP=1 (needs root and the Debian mirror)")
	}
	h.must(t, "image", "build", "--debootstrap", "bookworm", "--name", "debian-bookworm")
	defer h.run("image", "delete", "debian-bookworm")
	out := h.must(t, "vm", "run", "--rm", "--image", "debian-bookworm", "--", "sh", "-c",
		"cat /proc/1/comm; . /etc/os-release; echo $VERSION_CODENAME; git --version; for c in make gcc curl; do command -v $c; done; hostname")
	for _, want := range []string{"systemd\n", "bookworm\n", "git version", "/usr/bin/make", "/usr/bin/gcc", "/usr/bin/curl"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output %q lacks %q", out, want)
		}
	}
}
