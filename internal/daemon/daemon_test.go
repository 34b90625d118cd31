package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/errdefs"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		err  error
		code int
		wire string
	}{
		{errdefs.NotFound("vm %q not found", "x"), http.StatusNotFound, errdefs.CodeNotFound},
		{errdefs.Exists("dup"), http.StatusConflict, errdefs.CodeExists},
		{errdefs.Conflict("busy"), http.StatusConflict, errdefs.CodeConflict},
		{errdefs.Invalid("bad"), http.StatusBadRequest, errdefs.CodeBadRequest},
		{errdefs.Unavailable("later"), http.StatusServiceUnavailable, errdefs.CodeUnavailable},
		{errors.New("disk on fire"), http.StatusInternalServerError, errdefs.CodeInternal},
		{fmt.Errorf("start: %w", errdefs.NotFound("kernel")), http.StatusNotFound, errdefs.CodeNotFound},
	}
	for _, tc := range tests {
		code, e := status(tc.err)
		if code != tc.code || e.Code != tc.wire || e.Message != tc.err.Error() {
			t.Errorf("status(%v) = %d, %+v; want %d, code %q", tc.err, code, e, tc.code, tc.wire)
		}
	}
}

func TestPeerUIDRejectsNonUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := peerUID(a); err == nil {
		t.Fatal("peerUID of a pipe succeeded")
	}
}

// TestServeOverUnixSocket runs the real server on a unix socket and checks
// that a connection from our own uid gets through the SO_PEERCRED gate.
func TestServeOverUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), "test-version")
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})

	// The peer credentials the server sees are ours.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if uid, err := peerUID(c); err != nil || uid != os.Getuid() {
		t.Errorf("peerUID(client side) = %d, %v; want %d", uid, err, os.Getuid())
	}
	_ = c.Close()

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	defer hc.CloseIdleConnections()

	resp, err := hc.Get("http://banger/v1/ping")
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ping status %d", resp.StatusCode)
	}
	var p api.Ping
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != api.Version || p.Version != "test-version" || p.PID != os.Getpid() {
		t.Fatalf("ping = %+v", p)
	}

	// A malformed body is refused before reaching the service, with the
	// bad_request code in the error body.
	resp3, err := hc.Post("http://banger/v1/vms", "application/json", strings.NewReader(`{"bogus_field": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp3.Body.Close()
	var eb api.ErrorBody
	if err := json.NewDecoder(resp3.Body).Decode(&eb); err != nil {
		t.Fatal(err)
	}
	if resp3.StatusCode != http.StatusBadRequest || eb.Error.Code != errdefs.CodeBadRequest || !strings.Contains(eb.Error.Message, "bogus_field") {
		t.Fatalf("bad body: status %d, error %+v", resp3.StatusCode, eb.Error)
	}

	// An unknown route is a plain 404 from the mux, not a crash.
	resp2, err := hc.Get("http://banger/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown route status %d, want 404", resp2.StatusCode)
	}
}

// TestShutdownRoute: an on-demand bangerd stops when asked; a managed one
// refuses, since nothing would bring it back.
func TestShutdownRoute(t *testing.T) {
	for _, tc := range []struct {
		managed string
		code    int
		stops   bool
	}{
		{"", http.StatusAccepted, true},
		{api.ManagedSystemd, http.StatusConflict, false},
		{api.ManagedSystemRun, http.StatusConflict, false},
	} {
		t.Run("managed="+tc.managed, func(t *testing.T) {
			s := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), "v")
			s.managed = tc.managed
			for range 2 { // a second request must not close the channel twice
				rec := httptest.NewRecorder()
				s.http.Handler.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/shutdown", nil))
				if rec.Code != tc.code {
					t.Fatalf("status %d, want %d: %s", rec.Code, tc.code, rec.Body)
				}
			}
			select {
			case <-s.Stopping():
				if !tc.stops {
					t.Error("a managed bangerd agreed to stop")
				}
			default:
				if tc.stops {
					t.Error("bangerd did not start stopping")
				}
			}
			rec := httptest.NewRecorder()
			s.http.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/ping", nil))
			var p api.Ping
			if err := json.NewDecoder(rec.Body).Decode(&p); err != nil || p.Managed != tc.managed || p.StartedAt.IsZero() {
				t.Errorf("ping = %+v, %v", p, err)
			}
		})
	}
}

func TestManagedBy(t *testing.T) {
	for _, tc := range []struct{ env, want string }{
		{"", ""},
		{api.SupervisorSystemRun, api.ManagedSystemRun},
		{api.SupervisorSystemd, api.ManagedSystemd},
		{"something-else", ""},
	} {
		t.Setenv(api.SupervisorEnv, tc.env)
		if m := managedBy(); m != tc.want {
			t.Errorf("%s=%q: managed %q, want %q", api.SupervisorEnv, tc.env, m, tc.want)
		}
	}
}

// TestProbeHelperWithoutHelper: no helper means an answer at once (no
// waiting for one that is starting), and nothing that needs it.
func TestProbeHelperWithoutHelper(t *testing.T) {
	t.Setenv("BANGER_HELPER_SOCKET", filepath.Join(t.TempDir(), "missing.sock"))
	start := time.Now()
	p := probeHelper(config.Config{})
	if p.err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("probe: %v after %s", p.err, time.Since(start))
	}
	if p.served() {
		t.Error("a missing helper counts as served")
	}
	// New Firecracker VMs cannot start, but running ones adopted at
	// start-up keep the client: the helper may come up just after bangerd.
	if h, off := p.firecracker(); h == nil || !strings.Contains(off, "does not answer") {
		t.Errorf("firecracker helper without a helper: %v, %q; want the client and the reason", h, off)
	}
}
