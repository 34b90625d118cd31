package jail

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/jail/jailtest"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	jailtest.MaybeRunFakeJailer()
	code := m.Run()
	if pids := jailtest.FakeJailers(); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "leak: fake jailers still running after the tests: %v\n", pids)
		code = 1
	}
	os.Exit(code)
}

func TestJailerArgv(t *testing.T) {
	spec := ArgvSpec{
		JailerBin: "/usr/bin/jailer", FirecrackerBin: "/usr/bin/firecracker", VMID: "vm-1",
		UID: 1000, GID: 1001, Base: "/var/lib/banger-root/jail",
	}
	want := []string{
		"/usr/bin/jailer", "--id", "vm-1", "--exec-file", "/usr/bin/firecracker", "--uid", "1000", "--gid", "1001",
		"--chroot-base-dir", "/var/lib/banger-root/jail", "--", "--api-sock", "/run/firecracker.socket",
	}
	got := JailerArgv(spec)
	if !slices.Equal(got, want) {
		t.Errorf("JailerArgv =\n %q\nwant\n %q", got, want)
	}
	for _, a := range got {
		switch a {
		// The process model banger relies on: firecracker keeps the
		// jailer's pid.
		case "--daemonize", "--new-pid-ns":
			t.Errorf("argv has %s", a)
		// No cgroup work: with version 2 the jailer moves itself into a
		// cgroup banger does not own whenever that cgroup exists.
		case "--cgroup-version", "--cgroup", "--parent-cgroup":
			t.Errorf("argv has %s", a)
		}
	}
}

func TestLayout(t *testing.T) {
	l, err := NewLayout("/var/lib/banger-root/jail", ExecName("/opt/fc/bin/firecracker-v1.12"), "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		l.ExecDir():   "/var/lib/banger-root/jail/firecracker-v1.12",
		l.VMDir():     "/var/lib/banger-root/jail/firecracker-v1.12/vm-1",
		l.Chroot():    "/var/lib/banger-root/jail/firecracker-v1.12/vm-1/root",
		l.APISocket(): "/var/lib/banger-root/jail/firecracker-v1.12/vm-1/root/run/firecracker.socket",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	for _, bad := range []struct{ base, exec, id string }{
		{"jail", "firecracker", "vm-1"},
		{"/", "firecracker", "vm-1"},
		{"/a/../b", "firecracker", "vm-1"},
		{"/j", "", "vm-1"},
		{"/j", "..", "vm-1"},
		{"/j", "a/b", "vm-1"},
		{"/j", "firecracker", "../x"},
		{"/j", "firecracker", ""},
		{"/j", "firecracker", "vm_1"},
	} {
		if _, err := NewLayout(bad.base, bad.exec, bad.id); err == nil {
			t.Errorf("NewLayout(%q, %q, %q) accepted", bad.base, bad.exec, bad.id)
		}
	}
}

// TestStartTimeAndAlive: the stat parsing itself is internal/procstat's.
func TestStartTimeAndAlive(t *testing.T) {
	start, err := StartTime(os.Getpid())
	if err != nil || start == 0 {
		t.Fatalf("StartTime(self) = %d, %v", start, err)
	}
	if !Alive(os.Getpid(), start) || Alive(os.Getpid(), start+1) || Alive(0, 0) || Alive(-1, start) {
		t.Error("Alive does not tell the test's process (pid and start time) from others")
	}
}

// The path checks, as a non-root user: the test's uid stands in for root
// (trusted), temp dirs for the system's directories.
func TestCheckBinary(t *testing.T) {
	me := os.Getuid()
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	write(t, good, 0o755)
	if err := checkBinary(good, me); err != nil {
		t.Fatalf("good binary refused: %v", err)
	}

	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	groupW := filepath.Join(dir, "groupw")
	write(t, groupW, 0o775)
	worldW := filepath.Join(dir, "worldw")
	write(t, worldW, 0o757)
	noExec := filepath.Join(dir, "noexec")
	write(t, noExec, 0o644)
	openDir := filepath.Join(dir, "open")
	mkdir(t, openDir, 0o777)
	inOpen := filepath.Join(openDir, "bin")
	write(t, inOpen, 0o755)
	linkedDir := filepath.Join(dir, "linked")
	if err := os.Symlink(dir, linkedDir); err != nil {
		t.Fatal(err)
	}
	viaLink := filepath.Join(linkedDir, "good")
	notFile := filepath.Join(dir, "adir")
	mkdir(t, notFile, 0o755)

	for _, tc := range []struct{ path, want string }{
		{link, "is a symlink"},
		{groupW, "writable by group or others"},
		{worldW, "writable by group or others"},
		{noExec, "not executable"},
		{inOpen, "writable by group or others"},
		{viaLink, "is a symlink"},
		{notFile, "not a regular file"},
		{filepath.Join(dir, "missing"), "no such file"},
		{"relative/bin", "clean absolute"},
		{dir + "/./good", "clean absolute"},
	} {
		err := checkBinary(tc.path, me)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkBinary(%s) = %v, want an error mentioning %q", tc.path, err, tc.want)
		}
	}
	if os.Getuid() != 0 {
		// Owned by the test user, not root: refused by the real check.
		if err := CheckBinary(good); !errors.Is(err, ErrUnsafe) {
			t.Errorf("CheckBinary of a file the test user owns = %v, want ErrUnsafe", err)
		}
	}
}

func TestCheckBase(t *testing.T) {
	me := os.Getuid()
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	mkdir(t, base, 0o711)
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := checkBase(base, me); err != nil && !strings.Contains(err.Error(), "nodev") && !strings.Contains(err.Error(), "noexec") {
		t.Fatalf("good base refused: %v", err)
	}
	// Root's alone is enough: the owner reaches nothing in a jail.
	private := filepath.Join(dir, "private")
	mkdir(t, private, 0o700)
	if err := checkBase(private, me); err != nil && !strings.Contains(err.Error(), "nodev") && !strings.Contains(err.Error(), "noexec") {
		t.Errorf("checkBase(a 0700 base) = %v, want accepted", err)
	}
	open := filepath.Join(dir, "open")
	mkdir(t, open, 0o777)
	sticky := filepath.Join(dir, "sticky")
	mkdir(t, sticky, os.ModeSticky|0o777)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(base, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	write(t, file, 0o644)
	for _, tc := range []struct{ path, want string }{
		{open, "writable by group or others"},
		{link, "is a symlink"},
		{file, "not a directory"},
		{"rel", "clean absolute"},
	} {
		err := checkBase(tc.path, me)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkBase(%s) = %v, want an error mentioning %q", tc.path, err, tc.want)
		}
	}
	// A sticky world-writable directory is safe only when root owns it:
	// then no one else can rename root's entries in it.
	err := checkBase(sticky, me)
	if me == 0 {
		if err != nil && !strings.Contains(err.Error(), "nodev") && !strings.Contains(err.Error(), "noexec") {
			t.Errorf("root-owned sticky dir refused: %v", err)
		}
	} else if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("checkBase(sticky dir owned by uid %d) = %v, want refused", me, err)
	}
}

func TestOpenNoFollow(t *testing.T) {
	dir := t.TempDir()
	realDir := filepath.Join(dir, "real")
	mkdir(t, realDir, 0o755)
	write(t, filepath.Join(realDir, "f"), 0o644)
	if err := os.Symlink(realDir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(realDir, "f"), filepath.Join(realDir, "flink")); err != nil {
		t.Fatal(err)
	}
	fd, err := openNoFollow(filepath.Join(realDir, "f"))
	if err != nil {
		t.Fatalf("openNoFollow of a plain path: %v", err)
	}
	closeFD(fd)
	for _, p := range []string{filepath.Join(dir, "link", "f"), filepath.Join(realDir, "flink"), filepath.Join(dir, "link")} {
		if fd, err := openNoFollow(p); !errors.Is(err, ErrUnsafe) {
			closeFD(fd)
			t.Errorf("openNoFollow(%s) = %v, want ErrUnsafe", p, err)
		}
	}
	if _, err := openNoFollow(filepath.Join(dir, "missing")); !isNotExist(err) {
		t.Errorf("openNoFollow(missing) = %v, want not-exist", err)
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"vmlinux", "a", ".hidden", strings.Repeat("x", 255)} {
		if err := validName(ok); err != nil {
			t.Errorf("validName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "/abs", "nul\x00", strings.Repeat("x", 256)} {
		if err := validName(bad); err == nil {
			t.Errorf("validName(%q) accepted", bad)
		}
	}
}

func closeFD(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

func write(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("data"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
