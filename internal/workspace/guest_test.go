package workspace

import (
	"strings"
	"testing"
)

// The guest's stderr in an export error is quoted escaped, on one line,
// and bounded, however much of it the guest wrote.
func TestExportErrorQuotesGuestStderrSafely(t *testing.T) {
	stderr := "fatal: \x1b]0;owned\x07\x1b[2Jbad\u202e\n" + strings.Repeat("y", 1<<20)
	err := ExportError("dev", "/root/p", "abc", 1, stderr)
	if err == nil {
		t.Fatal("a failed export has no error")
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\x1b\x07\n\u202e") {
		t.Fatalf("the error carries the guest's controls: %q", msg[:min(len(msg), 200)])
	}
	if !strings.Contains(msg, `fatal: \x1b]0;owned\a\x1b[2Jbad\u202e\ny`) {
		t.Fatalf("the guest's text is not shown escaped: %q", msg[:min(len(msg), 200)])
	}
	if len(msg) > 4*maxQuoted {
		t.Fatalf("the error quotes %d bytes of guest stderr", len(msg))
	}
	if !strings.HasSuffix(msg, "more bytes)") {
		t.Fatalf("the error does not say the stderr was cut: %q", msg[len(msg)-60:])
	}
}

func TestSyncErrorQuotesGuestHeadSafely(t *testing.T) {
	err := SyncError("dev", "/root/p", "0123456789abcdef", exitGuestAhead, "\x1b[2J\x1b]0;x\x07\n")
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\x07") {
		t.Fatalf("SyncError = %q", err)
	}
}
