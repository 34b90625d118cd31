package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/privop"
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
	if req.Method == http.MethodGet && req.URL.Path == "/" {
		_, _ = io.WriteString(w, `{"id":"x","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}`)
		return
	}
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

	if err := Configure(context.Background(), typicalSpec(), DialPath(sock)); err != nil {
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
	if op.Tap != spec.Net.TapName {
		t.Errorf("launch names tap %q, want the VM's %q (handed to its uid)", op.Tap, spec.Net.TapName)
	}
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

	// A drive given open (a snapshot device) travels as a copy of its fd,
	// never reopened by path.
	open, err := os.OpenFile(spec.Drives[0].Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	given := spec
	given.Drives = []vmm.Drive{{ID: "root", Path: "/dev/dm-7", File: open, Block: true}}
	gop, gfiles, err := jailFiles(given)
	if err != nil {
		t.Fatal(err)
	}
	var a, b2 unix.Stat_t
	if err := unix.Fstat(int(gfiles[3].Fd()), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(open.Fd()), &b2); err != nil {
		t.Fatal(err)
	}
	if gop.Files[3].Name != "root" || gfiles[3].Fd() == open.Fd() || a.Ino != b2.Ino {
		t.Errorf("open drive: %+v, fd %d (given %d), ino %d (given %d)", gop.Files[3], gfiles[3].Fd(), open.Fd(), a.Ino, b2.Ino)
	}
	closeAll(gfiles)
	if _, err := open.Write([]byte("z")); err != nil {
		t.Errorf("the caller's file was closed with the driver's copy: %v", err)
	}

	// An overlay: refused with what to do instead.
	overlay := spec
	overlay.Drives = []vmm.Drive{{ID: "root", Path: spec.Drives[0].Path, Format: vmm.FormatQCOW2}}
	if _, _, err := jailFiles(overlay); err == nil || !strings.Contains(err.Error(), "vmm = qemu") {
		t.Errorf("qcow2 drive: %v", err)
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

// fakeHelper stands in for the root helper: it "launches" a placeholder
// process, serves an API recorder and a vsock echo inside a chroot whose
// socket paths are far longer than AF_UNIX allows, dials them for the
// driver and signals the process.
type fakeHelper struct {
	t       *testing.T
	chroot  string
	rec     *recorder
	child   *exec.Cmd
	dials   []string
	signals []string
	cleaned []string
}

// listenLong binds a unix socket at path, which may exceed sun_path: bind
// a short path, then move the socket into place.
func listenLong(t *testing.T, path string) net.Listener {
	t.Helper()
	short := filepath.Join(os.TempDir(), fmt.Sprintf("fcl-%d-%d", os.Getpid(), len(path)))
	_ = os.Remove(short)
	ln, err := net.Listen("unix", short)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Rename(short, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (f *fakeHelper) LaunchFirecracker(_ context.Context, op privop.LaunchFirecracker, files []*os.File) (privop.LaunchFirecrackerResult, error) {
	if err := op.Validate(); err != nil {
		return privop.LaunchFirecrackerResult{}, err
	}
	if len(files) != len(op.Files) {
		return privop.LaunchFirecrackerResult{}, fmt.Errorf("%d fds for %d files", len(files), len(op.Files))
	}
	if err := os.MkdirAll(filepath.Join(f.chroot, "run"), 0o700); err != nil {
		return privop.LaunchFirecrackerResult{}, err
	}
	api := listenLong(f.t, filepath.Join(f.chroot, privop.JailAPISocket))
	srv := &http.Server{Handler: f.rec}
	go func() { _ = srv.Serve(api) }()
	f.t.Cleanup(func() { srv.Close() })
	vs := listenLong(f.t, filepath.Join(f.chroot, privop.JailVsock))
	go func() {
		for {
			c, err := vs.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "CONNECT 52\n" {
					return
				}
				_, _ = io.WriteString(c, "OK 1073741824\n")
				_, _ = io.Copy(c, c) // the "guest" echoes
			}()
		}
	}()
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		return privop.LaunchFirecrackerResult{}, err
	}
	f.child = child
	f.t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	st, err := vmm.StartTime(child.Process.Pid)
	if err != nil {
		return privop.LaunchFirecrackerResult{}, err
	}
	return privop.LaunchFirecrackerResult{PID: child.Process.Pid, PIDStart: st, Chroot: f.chroot}, nil
}

// DialJail connects to the socket through an O_PATH fd of it, as the
// helper does: the path is too long to connect to by name.
func (f *fakeHelper) DialJail(ctx context.Context, vmID, socket string, _ time.Duration) (net.Conn, error) {
	f.dials = append(f.dials, vmID+" "+socket)
	rel := privop.JailAPISocket
	if socket == privop.SocketVsock {
		rel = privop.JailVsock
	}
	fd, err := unix.Open(filepath.Join(f.chroot, rel), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var d net.Dialer
	return d.DialContext(ctx, "unix", fmt.Sprintf("/proc/self/fd/%d", fd))
}

func (f *fakeHelper) SignalVMM(_ context.Context, vmID, signal string) error {
	f.signals = append(f.signals, vmID+" "+signal)
	if signal == privop.SignalKill {
		return f.child.Process.Kill()
	}
	return f.child.Process.Signal(syscall.SIGTERM)
}

func (f *fakeHelper) CleanupJail(_ context.Context, id string) error {
	f.cleaned = append(f.cleaned, id)
	return nil
}

// TestStartThroughLongJailPaths: bangerd reaches nothing of the jail by
// path (its sockets lie beyond the 108 bytes of sun_path, and the jail is
// the VM's uid's anyway): it configures firecracker, reaches the agent and
// signals the process, all through the helper.
func TestStartThroughLongJailPaths(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep")
	}
	dir := t.TempDir()
	chroot := filepath.Join(dir, strings.Repeat("j", 100), "firecracker", "0123456789abcdef0123456789abcdef", "root")
	if len(filepath.Join(chroot, privop.JailAPISocket)) <= 108 {
		t.Fatal("chroot path not long enough for the test")
	}
	spec := typicalSpec()
	spec.RunDir = filepath.Join(dir, "run")
	spec.ConsoleLog = filepath.Join(dir, "console.log")
	spec.Kernel = filepath.Join(dir, "vmlinux")
	spec.Initrd = ""
	spec.Drives = []vmm.Drive{{ID: "root", Path: filepath.Join(dir, "root.ext4")}}
	for _, p := range []string{spec.Kernel, spec.Drives[0].Path} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fh := &fakeHelper{t: t, chroot: chroot, rec: &recorder{}}
	d := &Driver{FirecrackerBin: "/usr/bin/true", JailerBin: "/usr/bin/true", Helper: fh}
	proc, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if last := fh.rec.reqs[len(fh.rec.reqs)-1]; last != `PUT /actions {"action_type":"InstanceStart"}` {
		t.Errorf("last request %q, want InstanceStart", last)
	}
	if proc.Handle.AgentPort != 52 || proc.Handle.AgentSock != "" {
		t.Errorf("agent handle %+v, want port 52 and no socket path", proc.Handle)
	}
	c, err := proc.DialAgent(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("through the vsock link read %q, %v", buf, err)
	}
	c.Close()
	if !slices.Contains(fh.dials, spec.ID+" api") || !slices.Contains(fh.dials, spec.ID+" vsock") {
		t.Errorf("dials through the helper: %v", fh.dials)
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := proc.Wait(ctx); err != nil {
		t.Fatalf("the VMM did not exit on SIGKILL through the helper: %v", err)
	}
	if want := []string{spec.ID + " kill"}; !slices.Equal(fh.signals, want) {
		t.Errorf("signals through the helper %v, want %v", fh.signals, want)
	}
	if err := d.Release(context.Background(), proc.Handle, spec.RunDir); err != nil {
		t.Fatal(err)
	}
	if len(fh.cleaned) != 1 || fh.cleaned[0] != spec.ID {
		t.Errorf("cleanup calls %v", fh.cleaned)
	}
}
