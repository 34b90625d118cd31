package firecracker

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"banger/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// recorder is a stand-in API server that keeps every request as text.
type recorder struct {
	mu   sync.Mutex
	reqs []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	line := req.Method + " " + req.URL.Path
	if len(body) > 0 {
		var v any
		if err := json.Unmarshal(body, &v); err == nil {
			canon, _ := json.Marshal(v) // sorted keys
			line += " " + string(canon)
		} else {
			line += " " + string(body)
		}
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, line)
	r.mu.Unlock()
	if req.Method == http.MethodGet && req.URL.Path == "/machine-config" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"vcpu_count":2,"mem_size_mib":512,"smt":false}`)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func typicalSpec() vmm.Spec {
	return vmm.Spec{
		ID: "0123456789abcdef0123456789abcdef", Name: "dev", VCPU: 2, MemoryMiB: 512,
		Kernel: "/state/kernels/k1/vmlinux", Initrd: "/cache/initrd-k1.cpio",
		Cmdline: "console=ttyS0 root=/dev/vda rw banger.hostname=dev",
		Drives: []vmm.Drive{
			{ID: "root", Path: "/state/vms/x/root.ext4"},
			{ID: "work", Path: "/state/vms/x/work.ext4"},
		},
		RunDir: "/run/banger/vms/x", ConsoleLog: "/state/vms/x/console.log",
		Net: &vmm.Net{TapName: "tap-fc-01234567", MAC: "06:00:ac:10:00:02"},
	}
}

// TestAPISequenceGolden pins the exact requests (and bodies) bangerd sends
// to configure and boot a typical VM.
func TestAPISequenceGolden(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	srv := &http.Server{Handler: rec}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	if err := Configure(context.Background(), typicalSpec(), sock); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(rec.reqs, "\n") + "\n"
	golden(t, "api-sequence.golden", got)
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestJailFilesOrderAndModes(t *testing.T) {
	dir := t.TempDir()
	spec := typicalSpec()
	spec.ConsoleLog = filepath.Join(dir, "console.log")
	spec.Kernel = filepath.Join(dir, "vmlinux")
	spec.Initrd = filepath.Join(dir, "initrd")
	spec.Drives = []vmm.Drive{{ID: "root", Path: filepath.Join(dir, "root.ext4")}, {ID: "base", Path: filepath.Join(dir, "base.ext4"), ReadOnly: true}}
	for _, p := range []string{spec.Kernel, spec.Initrd, spec.Drives[0].Path, spec.Drives[1].Path} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	op, files, err := jailFiles(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	op.FirecrackerBin, op.JailerBin = "/usr/bin/firecracker", "/usr/bin/jailer"
	if err := op.Validate(); err != nil {
		t.Fatalf("the op the driver builds is invalid: %v", err)
	}
	b, _ := json.Marshal(op.Files)
	if want := `[{"role":"console"},{"role":"kernel","name":"vmlinux"},{"role":"initrd","name":"initrd"},{"role":"drive","name":"root"},{"role":"drive","name":"base","read_only":true}]`; string(b) != want {
		t.Errorf("files = %s\nwant    %s", b, want)
	}
	if len(files) != len(op.Files) {
		t.Fatalf("%d fds for %d files", len(files), len(op.Files))
	}
	// The read-only drive's fd cannot write; the others' can.
	if _, err := files[4].Write([]byte("y")); err == nil {
		t.Error("the read-only drive was opened for writing")
	}
	if _, err := files[3].Write([]byte("y")); err != nil {
		t.Errorf("the root drive is not writable: %v", err)
	}

	// A missing file: an error naming it, and nothing left open.
	spec.Initrd = filepath.Join(dir, "missing")
	if _, _, err := jailFiles(spec); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing initrd: %v", err)
	}
}

func TestCheckBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "firecracker")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "fc-link")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string
	}{
		{"", "not configured"},
		{"firecracker", "absolute"},
		{filepath.Join(dir, "nope"), "no such file"},
		{link, "symlink"},
		{dir, "not a regular file"},
	}
	for _, tc := range tests {
		if err := CheckBinary(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckBinary(%q) = %v, want %q", tc.path, err, tc.want)
		}
	}
	// t.TempDir is 0700 root-owned when root runs the tests, but the
	// binary inside is group/world-writable here.
	if err := os.Chmod(bin, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := CheckBinary(bin); err == nil {
		t.Error("a world-writable binary passed")
	}
}

func TestIsOurs(t *testing.T) {
	id := "0123456789abcdef"
	tests := []struct {
		argv []string
		want bool
	}{
		{[]string{"/firecracker", "--id=" + id, "--start-time-us=1", "--api-sock", "/run/firecracker.socket"}, true},
		{[]string{"/firecracker", "--id", id}, true},
		{[]string{"/firecracker", "--id=other"}, false},
		{[]string{"/usr/bin/sleep", "--id=" + id}, false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := isOurs(tc.argv, id); got != tc.want {
			t.Errorf("isOurs(%q) = %v", tc.argv, got)
		}
	}
}

func TestVersions(t *testing.T) {
	for _, tc := range []struct {
		out, want string
		ok        bool
	}{
		{"Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n", "1.16.1", true},
		{"Firecracker v1.7.0", "1.7.0", true},
		{"firecracker 1.2", "", false},
	} {
		if got, ok := ParseVersion(tc.out); got != tc.want || ok != tc.ok {
			t.Errorf("ParseVersion(%q) = %q, %v", tc.out, got, ok)
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.8.0", "1.16.1", -1}, {"1.16.1", "1.16.1", 0}, {"1.16.10", "1.16.9", 1}, {"2.0.0", "1.99.99", 1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%s, %s) = %d", tc.a, tc.b, got)
		}
	}
}
