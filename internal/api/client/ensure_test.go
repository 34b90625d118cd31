package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// The CLI talks only to a bangerd running as the uid it expects: a socket
// another user serves (one squatting the /tmp fallback, say) is refused
// before any request is sent.
func TestClientChecksPeerUID(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bangerd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		_, _ = w.Write([]byte(`{"version":"test"}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	c := New(sock, "", "")
	if p, err := c.Ping(context.Background()); err != nil || p.Version != "test" {
		t.Fatalf("ping of a bangerd of this uid: %+v, %v", p, err)
	}
	c.PeerUID = os.Getuid() + 1
	before := requests.Load()
	_, err = c.Ping(context.Background())
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "is served by uid 0") && !strings.Contains(err.Error(), "not the owner's bangerd") {
		t.Fatalf("ping of a socket another uid serves: %v, want a refusal naming the uid", err)
	}
	if requests.Load() != before {
		t.Error("a request reached the socket of another uid")
	}
}
