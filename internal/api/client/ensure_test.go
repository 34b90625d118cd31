package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/errdefs"
)

// A bangerd that exits as it starts (a bad config, say) is reported at
// once, with the reason it gave, not after the 15 s wait for an answer.
func TestEnsureReportsABangerdThatExits(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "bangerd")
	script := "#!/bin/sh\necho 'bangerd: parse config x.toml: jailer_bin \"/usr/bin/sudo\": pinned at install' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "bangerd.stderr.log")
	if err := os.WriteFile(log, []byte("bangerd: an earlier run's last words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := New(filepath.Join(dir, "bangerd.sock"), fake, log)
	start := time.Now()
	_, err := c.Ensure(context.Background())
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to report a bangerd that exited", took)
	}
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), `exited as it started (exit status 1): parse config x.toml: jailer_bin "/usr/bin/sudo"`) {
		t.Fatalf("Ensure = %v", err)
	}
	if strings.Contains(err.Error(), "earlier run") {
		t.Errorf("reported an earlier run's output: %v", err)
	}
}
