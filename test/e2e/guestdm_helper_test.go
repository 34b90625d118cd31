package e2e

import (
	"testing"
)

// TestGuestDMHelper runs the root helper's snapshot ops against a real
// device-mapper in a guest: the helper is SIGKILLed after each step of a
// create and restarted, and its reconcile must report and clean up.
func TestGuestDMHelper(t *testing.T) {
	t.Parallel()
	defer group(t)()
	out := guestGoTest(t, "internal/helper", []string{"BANGER_TEST_ROOT=1", "BANGER_TEST_DM=1"}, "-test.run", "^TestSnapshotHelperCrash$")
	if err := requirePassed(out, "TestSnapshotHelperCrash"); err != nil {
		t.Fatalf("the helper crash test did not run in full in the guest: %v", err)
	}
}
