package firecracker

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/vmm"
	"banger/test/fcspec"
)

// rawRequest is one request as the server received it.
type rawRequest struct {
	method, path string
	body         []byte
}

// apiServer answers like Firecracker on a unix socket (204 for a
// configuration PUT, the instance info and machine config for GETs) and
// keeps every request as sent.
type apiServer struct {
	mu   sync.Mutex
	reqs []rawRequest
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, rawRequest{r.Method, r.URL.Path, body})
	s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"x","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}`)
	case r.Method == http.MethodGet && r.URL.Path == "/machine-config":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"vcpu_count":2,"mem_size_mib":512,"smt":false}`)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// serveAPI starts an apiServer on a fresh unix socket.
func serveAPI(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return sock
}

// TestConfigureRequestsMatchTheAPI: every request of the configure and
// boot sequence, for a VM with a drive whose id Firecracker would refuse
// as is, is valid against Firecracker's published API (test/fcspec):
// known endpoints, valid path ids, required fields present, no unknown or
// deprecated fields, values in their enums and ranges.
func TestConfigureRequestsMatchTheAPI(t *testing.T) {
	spec := typicalSpec()
	spec.Drives = append(spec.Drives, vmm.Drive{ID: "seed-1.data", Path: "/state/vms/x/seed.ext4", ReadOnly: true})
	s := &apiServer{}
	sock := serveAPI(t, s)
	if err := Configure(context.Background(), spec, DialPath(sock)); err != nil {
		t.Fatal(err)
	}
	if len(s.reqs) == 0 {
		t.Fatal("no request recorded")
	}
	for _, r := range s.reqs {
		if err := fcspec.Validate(r.method, r.path, r.body); err != nil {
			t.Errorf("%v\n  body %s", err, r.body)
		}
	}
}

func TestDriveIDs(t *testing.T) {
	tests := []struct {
		ids  []string
		want []string
		err  string
	}{
		{[]string{"root", "work"}, []string{"root", "work"}, ""},
		{[]string{"root", "seed-1.data", "a_B9"}, []string{"root", "seed_1_data", "a_B9"}, ""},
		{[]string{"dätä"}, []string{"d__t__"}, ""},
		{[]string{"root", "a-b", "a.b"}, nil, `"a-b" and "a.b" would both be "a_b"`},
		{[]string{"root", "a_b", "a-b"}, nil, `"a_b" and "a-b"`},
		{[]string{"root", ""}, nil, "drive 1 has no id"},
	}
	for _, tc := range tests {
		var drives []vmm.Drive
		for _, id := range tc.ids {
			drives = append(drives, vmm.Drive{ID: id})
		}
		got, err := driveIDs(drives)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("driveIDs(%q) = %q, %v; want error %q", tc.ids, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("driveIDs(%q) = %q, %v; want %q", tc.ids, got, err, tc.want)
		}
		for _, id := range got {
			if !fcspec.IDPattern.MatchString(id) {
				t.Errorf("driveIDs(%q) gave %q, which Firecracker refuses", tc.ids, id)
			}
		}
	}
}

// TestDriveJailNameUnchanged: a drive whose id is mapped for the API keeps
// banger's name for its file in the jail, where the helper put it.
func TestDriveJailNameUnchanged(t *testing.T) {
	spec := typicalSpec()
	spec.Drives = []vmm.Drive{{ID: "root"}, {ID: "seed-1.data", ReadOnly: true}}
	reqs, err := requests(spec)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range reqs {
		if d, ok := r.body.(apiDrive); ok && d.DriveID == "seed_1_data" {
			found = true
			if r.path != "/drives/seed_1_data" || d.PathOnHost != "/seed-1.data" || !d.IsReadOnly || d.IsRootDevice {
				t.Errorf("mapped drive sent as %s %+v", r.path, d)
			}
		}
	}
	if !found {
		t.Error("no drive request with the mapped id")
	}
}

// TestBootArgsKeepFirecrackerDefaults: passing boot_args replaces
// Firecracker's default command line, so the parts of it that still apply
// are sent too: its i8042 arguments ahead of bangerd's command line (which
// can still override them), reboot=k after it.
func TestBootArgsKeepFirecrackerDefaults(t *testing.T) {
	cmdline := "console=ttyS0 root=/dev/vda rw"
	got := strings.Fields(bootArgs(cmdline))
	pos := func(arg string) int { return slices.Index(got, arg) }
	user := pos("console=ttyS0")
	if user < 0 || strings.Join(got[user:user+3], " ") != cmdline {
		t.Fatalf("bangerd's command line is not kept whole in %q", got)
	}
	for _, arg := range []string{"i8042.noaux", "i8042.nomux", "i8042.dumbkbd"} {
		if p := pos(arg); p < 0 || p > user {
			t.Errorf("%s missing or after bangerd's arguments in %q", arg, got)
		}
	}
	if p := pos("reboot=k"); p < user {
		t.Errorf("reboot=k missing or before bangerd's arguments in %q", got)
	}
}

// slowServer delays the answer to one path.
type slowServer struct {
	apiServer
	path  string
	delay time.Duration
}

func (s *slowServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == s.path {
		time.Sleep(s.delay)
	}
	s.apiServer.ServeHTTP(w, r)
}

// TestInstanceStartHasItsOwnTimeout: InstanceStart may take longer than a
// configuration request is allowed to (Firecracker loads the kernel before
// it answers); any other request that slow fails, naming the bound.
func TestInstanceStartHasItsOwnTimeout(t *testing.T) {
	defer func(r, s time.Duration) { requestTimeout, startTimeout = r, s }(requestTimeout, startTimeout)
	requestTimeout, startTimeout = 100*time.Millisecond, 5*time.Second

	slowStart := &slowServer{path: "/actions", delay: 400 * time.Millisecond}
	if err := Configure(context.Background(), typicalSpec(), DialPath(serveAPI(t, slowStart))); err != nil {
		t.Errorf("a slow InstanceStart failed: %v", err)
	}

	slowLogger := &slowServer{path: "/logger", delay: 400 * time.Millisecond}
	err := Configure(context.Background(), typicalSpec(), DialPath(serveAPI(t, slowLogger)))
	if err == nil || !strings.Contains(err.Error(), "PUT /logger: no answer within 100ms") {
		t.Errorf("a slow PUT /logger: %v", err)
	}
}

// faultServer refuses one path the way Firecracker does.
type faultServer struct {
	apiServer
	path string
}

func (s *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != s.path {
		s.apiServer.ServeHTTP(w, r)
		return
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, rawRequest{r.Method, r.URL.Path, nil})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, `{"fault_message":"The kernel file cannot be opened: No such file or directory (os error 2)"}`)
}

// TestConfigureStopsAtAFault: a refused request ends the sequence (no
// InstanceStart after it) with Firecracker's own reason.
func TestConfigureStopsAtAFault(t *testing.T) {
	s := &faultServer{path: "/boot-source"}
	err := Configure(context.Background(), typicalSpec(), DialPath(serveAPI(t, s)))
	if err == nil || !strings.Contains(err.Error(), "PUT /boot-source: firecracker answered 400 Bad Request: The kernel file cannot be opened") {
		t.Fatalf("Configure = %v", err)
	}
	if last := s.reqs[len(s.reqs)-1]; last.path != "/boot-source" {
		t.Errorf("requests went on after the fault, up to %s %s", last.method, last.path)
	}
}

// TestConfigureUsesTheDialer: every connection goes through the dial
// function given (the helper's, in production), none by path.
func TestConfigureUsesTheDialer(t *testing.T) {
	s := &apiServer{}
	sock := serveAPI(t, s)
	var dials atomic.Int32
	dial := func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return DialPath(sock)(ctx)
	}
	if err := Configure(context.Background(), typicalSpec(), dial); err != nil {
		t.Fatal(err)
	}
	if dials.Load() == 0 || len(s.reqs) == 0 {
		t.Errorf("%d dials for %d requests", dials.Load(), len(s.reqs))
	}
	// A dial that fails fails Configure before anything is sent.
	refused := func(context.Context) (net.Conn, error) { return nil, errors.New("helper refused") }
	if err := Configure(context.Background(), typicalSpec(), refused); err == nil || !strings.Contains(err.Error(), "helper refused") {
		t.Errorf("Configure through a failing dial = %v", err)
	}
}

// TestConfigureRefusesCollidingDriveIDs: drives that Firecracker could not
// tell apart are refused before any request is sent.
func TestConfigureRefusesCollidingDriveIDs(t *testing.T) {
	spec := typicalSpec()
	spec.Drives = []vmm.Drive{{ID: "root"}, {ID: "a-b"}, {ID: "a.b"}}
	s := &apiServer{}
	if err := Configure(context.Background(), spec, DialPath(serveAPI(t, s))); err == nil {
		t.Fatal("colliding drive ids were accepted")
	}
	if len(s.reqs) != 0 {
		t.Errorf("%d requests sent before refusing", len(s.reqs))
	}
}
