package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestGuestDMStorage drives bangerd's dm storage code (internal/vm) against
// the real banger-helper binary and device-mapper in a guest: a root
// snapshot made, written, released and made again with the write intact,
// copied for a commit, and deleted.
func TestGuestDMStorage(t *testing.T) {
	t.Parallel()
	defer group(t)()
	helper := filepath.Join(t.TempDir(), "banger-helper")
	build := timedCommand(buildTimeout, "go", "build", "-o", helper, "./cmd/banger-helper")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // the minimal guest has no libc
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a static banger-helper: %v\n%s", err, out)
	}
	out := guestGoTestWith(t, "internal/vm", map[string]string{"banger-helper": helper},
		[]string{"BANGER_TEST_ROOT=1", "BANGER_TEST_DM=1", "BANGER_TEST_HELPER_BIN=/root/bin/banger-helper"},
		"-test.run", "^TestDMStorageWithRealHelper$")
	if err := requirePassed(out, "TestDMStorageWithRealHelper"); err != nil {
		t.Fatalf("the dm storage test did not run in full in the guest: %v", err)
	}
}
