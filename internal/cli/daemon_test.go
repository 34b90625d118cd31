package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/api/client"
	"banger/internal/paths"
)

// fakeDaemon answers ping, the VM list and shutdown on a unix socket, as
// a bangerd of another version would; shutdown closes the socket.
type fakeDaemon struct {
	ping     api.Ping
	srv      *http.Server
	mu       sync.Mutex
	shutdown int
}

func startFakeDaemon(t *testing.T, sock string, ping api.Ping) *fakeDaemon {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{ping: ping}
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(f.ping) })
	m.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("[]")) })
	m.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		f.shutdown++
		f.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("{}"))
		go ln.Close()
	})
	f.srv = &http.Server{Handler: m}
	go func() { _ = f.srv.Serve(ln) }()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

// envFor is a CLI env talking to the socket in dir, never starting a daemon.
func envFor(t *testing.T, dir string) (*env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	layout := paths.New(filepath.Join(dir, "config"), filepath.Join(dir, "state"), filepath.Join(dir, "cache"), filepath.Join(dir, "run"))
	var stdout, stderr bytes.Buffer
	return &env{
		stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, layout: layout,
		cl: client.New(filepath.Join(dir, "d.sock"), "", filepath.Join(dir, "bangerd.log")),
	}, &stdout, &stderr
}

func execIn(t *testing.T, e *env, args ...string) error {
	t.Helper()
	root := newRoot(e)
	root.SetArgs(args)
	return root.ExecuteContext(context.Background())
}

// TestVersionNote: a bangerd of another version is pointed out once per
// command run, with the command that runs the new one.
func TestVersionNote(t *testing.T) {
	dir := shortTemp(t)
	startFakeDaemon(t, filepath.Join(dir, "d.sock"), api.Ping{APIVersion: api.Version, Version: "old-build", PID: 1 << 30})
	e, _, stderr := envFor(t, dir)
	for range 2 {
		if err := execIn(t, e, "ps"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(stderr.String(), "bangerd runs version old-build"); n != 1 || !strings.Contains(stderr.String(), "banger daemon restart runs the new one") {
		t.Errorf("stderr after two commands (%d notes):\n%s", n, stderr)
	}
}

func TestDaemonStatusAndStop(t *testing.T) {
	dir := shortTemp(t)
	f := startFakeDaemon(t, filepath.Join(dir, "d.sock"), api.Ping{APIVersion: api.Version, Version: "old-build", PID: 1 << 30, Managed: api.ManagedSystemRun})
	e, stdout, _ := envFor(t, dir)
	if err := execIn(t, e, "daemon", "status"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bangerd: running", "version: old-build (this banger is ", "restart banger system run to run the new one", "managed: system run"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}
	stdout.Reset()
	if err := execIn(t, e, "daemon", "stop"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	asked := f.shutdown
	f.mu.Unlock()
	if asked != 1 || !strings.Contains(stdout.String(), "bangerd old-build (pid 1073741824) stopped") {
		t.Errorf("stop asked %d times, printed %q", asked, stdout)
	}
	stdout.Reset()
	if err := execIn(t, e, "daemon", "status"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "bangerd: not running") {
		t.Errorf("status after stop: %q", stdout)
	}
}

// shortTemp is a temporary directory short enough for a unix socket path.
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
