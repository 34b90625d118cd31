package e2e

import (
	"os"
	"strings"
	"testing"
)

// TestDebianImage builds the Debian dev image the way a normal owner does:
// bangerd (the owner) asks the root helper, which runs debootstrap and hands
// the image back as an fd. Then it boots it: systemd is PID 1 and the agent
// runs as a service under it. The helper's network ops act in a test
// namespace; the helper itself needs the Debian mirror, so this runs only
// with BANGER_E2E_DEBOOTSTRAP=1 as root (make test sets it when root).
func TestDebianImage(t *testing.T) {
	defer group(t)()
	if os.Geteuid() != 0 || os.Getenv("BANGER_E2E_DEBOOTSTRAP") != "1" {
		t.Skip("set BANGER_E2E_DEBOOTSTRAP=1 and run as root (needs the Debian mirror)")
	}
	sp := startSplit(t, false)
	sp.ensureKernel(t)
	sp.mustAs("image", "build", "--debootstrap", "bookworm", "--name", "debian-bookworm")
	defer sp.run("image", "delete", "debian-bookworm")
	out := sp.mustAs("vm", "run", "--rm", "--image", "debian-bookworm", "--", "sh", "-c",
		"cat /proc/1/comm; . /etc/os-release; echo $VERSION_CODENAME; git --version; for c in make gcc curl; do command -v $c; done; id -u")
	for _, want := range []string{"systemd\n", "bookworm\n", "git version", "/usr/bin/make", "/usr/bin/gcc", "/usr/bin/curl", "\n0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest output %q lacks %q", out, want)
		}
	}
}
