package dmsnap

// Test hooks for the external tests (package dmsnap_test).

// ErrCrashed is what an operation returns when SetCrashHook simulated the
// process dying.
var ErrCrashed = errCrashed

// The crash points an operation passes, in order.
const (
	CrashAfterBaseAttach   = crashAfterBaseAttach
	CrashAfterBaseLoop     = crashAfterBaseLoop
	CrashAfterCOWLoop      = crashAfterCOWLoop
	CrashAfterDMCreate     = crashAfterDMCreate
	CrashAfterMarkRemoving = crashAfterMarkRemoving
	CrashAfterDMRemove     = crashAfterDMRemove
)

// SetCrashHook makes m stop dead (no undo, no journal write, loop holds
// closed as the kernel would) at every point where crash returns true.
func SetCrashHook(m *Manager, crash func(point string) bool) { m.crash = crash }
