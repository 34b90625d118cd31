// Package testutil holds the gates and helpers shared by banger's tests. It
// may be imported only from _test.go files.
//
// Test tiers:
//   - plain `go test ./...` needs no root and boots no VM;
//   - root integration tests call RequireRoot and run when BANGER_TEST_ROOT=1;
//   - VM tests call RequireVM and run when BANGER_TEST_VM=1 (real guests under
//     QEMU; they need a provisioned kernel, see test/e2e).
package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips t unless root tests are enabled, and fails it when they
// are enabled but the process is not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getenv("BANGER_TEST_ROOT") != "1" {
		t.Skip("root test: set BANGER_TEST_ROOT=1 to run")
	}
	if os.Geteuid() != 0 {
		t.Fatal("BANGER_TEST_ROOT=1 but not running as root")
	}
}

// RequireVM skips t unless VM tests are enabled.
func RequireVM(t testing.TB) {
	t.Helper()
	if os.Getenv("BANGER_TEST_VM") != "1" {
		t.Skip("VM test: set BANGER_TEST_VM=1 to run")
	}
}
