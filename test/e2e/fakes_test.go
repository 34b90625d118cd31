package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"banger/test/fakebuild"
)

// buildFake builds one test double (test/fakes/<pkg>) statically into dir,
// under a time limit. The fake firecracker gets the no-KVM opt-in only on a
// host without KVM, where it is the only way to reach a booted guest, and
// the test log says so.
func buildFake(t *testing.T, dir, pkg string) {
	t.Helper()
	var extra []string
	if pkg == "firecracker" {
		args, note, err := fakebuild.FirecrackerArgs()
		if err != nil {
			t.Fatal(err)
		}
		if note != "" {
			t.Log(note)
		}
		extra = args
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	argv := append(append([]string{"build", "-o", filepath.Join(dir, pkg)}, extra...), "./test/fakes/"+pkg)
	cmd := exec.CommandContext(ctx, "go", argv...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fake %s: %v: %s", pkg, err, out)
	}
}
