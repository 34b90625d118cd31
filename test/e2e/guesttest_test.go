package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// guestGoTest runs a package's tests inside a banger VM, as root: it
// builds the package's test binary (static), copies it into the VM, runs
// it there with args and env, and reports its output as this test's. It is
// how banger tests code that needs a kernel feature this host lacks
// (device-mapper, for one). The VM is deleted afterwards. It returns the
// binary's output (stdout, then stderr).
func guestGoTest(t *testing.T, pkg string, env []string, args ...string) string {
	t.Helper()
	return guestGoTestWith(t, pkg, nil, env, args...)
}

// guestGoTestWith is guestGoTest that also copies files into the guest
// first: extra maps a name under /root/bin in the guest to a host path
// (say, a banger binary the test drives).
func guestGoTestWith(t *testing.T, pkg string, extra map[string]string, env []string, args ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pkg.test")
	build := timedCommand(buildTimeout, "go", "test", "-c", "-o", bin, "./"+pkg)
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s tests: %v\n%s", pkg, err, out)
	}
	name := "gt-" + strings.NewReplacer("/", "-", "_", "-").Replace(filepath.Base(pkg))
	h.must(t, "vm", "create", "--name", name, "--image", "minimal")
	defer h.run("vm", "delete", name)
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := h.cmdWithStdin(f, "vm", "exec", name, "--", "sh", "-c", "mkdir -p /root/tmp /root/bin && cat > /root/pkg.test && chmod 755 /root/pkg.test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy the test binary into %s: %v\n%s", name, err, out)
	}
	for guestName, hostPath := range extra {
		ef, err := os.Open(hostPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := h.cmdWithStdin(ef, "vm", "exec", name, "--", "sh", "-c", `cat > "/root/bin/$0" && chmod 755 "/root/bin/$0"`, guestName)
		out, err := cmd.CombinedOutput()
		ef.Close()
		if err != nil {
			t.Fatalf("copy %s into %s: %v\n%s", hostPath, name, err, out)
		}
	}
	argv := append([]string{"vm", "exec", name, "--", "env", "TMPDIR=/root/tmp"}, env...)
	argv = append(append(argv, "/root/pkg.test", "-test.v"), args...)
	r := h.run(argv...)
	for _, l := range strings.Split(strings.TrimRight(r.stdout+r.stderr, "\n"), "\n") {
		t.Log("guest: " + l)
	}
	if r.code != 0 {
		t.Fatalf("%s tests failed in the guest (exit %d)", pkg, r.code)
	}
	if !strings.Contains(r.stdout, "PASS") {
		t.Fatalf("%s tests printed no PASS in the guest", pkg)
	}
	return r.stdout + r.stderr
}

// TestGuestHarness runs a small package's tests in a guest, proving the
// harness itself.
func TestGuestHarness(t *testing.T) {
	t.Parallel()
	defer group(t)()
	guestGoTest(t, "internal/atomicfile", nil)
}

// guestDMTests are internal/dmsnap's real-kernel tests. They skip on a
// kernel without loop or device-mapper, and a skipped suite still exits 0
// and prints PASS, so TestGuestDM requires each by name.
var guestDMTests = []string{"TestLoopIoctlsRoot", "TestLoopWithoutDevNodeRoot", "TestSnapshotsRoot", "TestSnapshotFailuresRoot"}

// TestGuestDM runs the device-mapper snapshot suite (internal/dmsnap) as
// root inside a guest, whose kernel has dm and loop (this host's has not).
func TestGuestDM(t *testing.T) {
	t.Parallel()
	defer group(t)()
	out := guestGoTest(t, "internal/dmsnap", []string{"BANGER_TEST_ROOT=1"})
	if err := requirePassed(out, guestDMTests...); err != nil {
		t.Fatalf("the guest's dm suite did not run in full: %v", err)
	}
}
