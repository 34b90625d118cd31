package helper

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"banger/internal/jail"
	"banger/internal/jail/jailtest"
	"banger/internal/privop"
	"banger/internal/testutil"
)

// The helper's test binary doubles as the fake jailer (see jailtest).
func init() { jailtest.MaybeRunFakeJailer() }

const jailOwner = 4242

// jailHarness is a helper on a real socket with a real jail base, fake
// binaries and one VM's files.
type jailHarness struct {
	*harness
	base, top  string
	fc, jailer string
	data       string
}

func startJailServer(t *testing.T) *jailHarness {
	t.Helper()
	testutil.RequireRoot(t)
	base := jailtest.Base(t)
	j := &jailHarness{base: base, top: filepath.Dir(base)}
	j.fc, j.jailer = jailtest.Binaries(t, j.top)
	j.data = filepath.Join(j.top, "data")
	if err := os.Mkdir(j.data, 0o755); err != nil {
		t.Fatal(err)
	}
	j.harness = startServer(t, func(c *Config) { c.JailBase = base; c.OwnerUID, c.OwnerGID = jailOwner, jailOwner })
	t.Cleanup(func() {
		if pids := jailtest.FakeJailers(); len(pids) > 0 {
			t.Errorf("fake jailers left running: %v", pids)
			for _, pid := range pids {
				jailtest.KillAndWait(t, pid)
			}
		}
	})
	return j
}

// vm returns a launch of vmID and its files, opened as bangerd would:
// console for writing, kernel for reading, a read-write and a read-only
// drive.
func (j *jailHarness) vm(t *testing.T, vmID string) (privop.LaunchFirecracker, []*os.File, string) {
	t.Helper()
	dir := filepath.Join(j.data, vmID)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	open := func(name, content string, flag int) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		files = append(files, f)
	}
	open("console.log", "", os.O_WRONLY|os.O_APPEND)
	open("vmlinux", "kernel", os.O_RDONLY)
	open("rootfs.ext4", "root drive", os.O_RDWR)
	open("seed.img", "seed", os.O_RDONLY)
	op := privop.LaunchFirecracker{VMID: vmID, FirecrackerBin: j.fc, JailerBin: j.jailer, Files: []privop.JailFile{
		{Role: privop.JailConsole},
		{Role: privop.JailKernel, Name: "vmlinux"},
		{Role: privop.JailDrive, Name: "rootfs.ext4"},
		{Role: privop.JailDrive, Name: "seed.img", ReadOnly: true},
	}}
	return op, files, filepath.Join(dir, "console.log")
}

func (j *jailHarness) jails(t *testing.T) *JailLedger {
	t.Helper()
	l, err := OpenJailLedger(j.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ownerOf(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestServerJailLifecycle drives the three ops through bangerd's client
// with real fds: launch, API socket, refusals while running, cleanup.
func TestServerJailLifecycle(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	op, files, console := j.vm(t, "vm-a")
	res, err := j.client.LaunchFirecracker(ctx, op, files)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	t.Cleanup(func() {
		if jail.Alive(res.PID, res.PIDStart) {
			jailtest.KillAndWait(t, res.PID)
		}
	})
	chroot := filepath.Join(j.base, "firecracker", "vm-a", "root")
	if res.Chroot != chroot || res.PID <= 0 || !jail.Alive(res.PID, res.PIDStart) {
		t.Fatalf("launch answered %+v; want chroot %s and a live pid", res, chroot)
	}
	line := jailtest.WaitReady(t, console)
	if !strings.Contains(line, "id=vm-a uid=4242 gid=4242 cwd=/ session_leader=true stdin_null=true") {
		t.Errorf("fake jailer reported %q", line)
	}
	// Files arrived in their roles: the drive is the host's file.
	if err := os.WriteFile(filepath.Join(chroot, "rootfs.ext4"), []byte("via the jail"), 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(j.data, "vm-a", "rootfs.ext4")); string(got) != "via the jail" {
		t.Errorf("host drive reads %q", got)
	}
	if _, err := os.OpenFile(filepath.Join(chroot, "seed.img"), os.O_WRONLY, 0); err == nil {
		t.Error("the read-only drive opens for writing")
	}
	if got, _ := os.ReadFile(filepath.Join(chroot, "vmlinux")); string(got) != "kernel" {
		t.Errorf("kernel in the jail reads %q", got)
	}
	// Recorded, with the process.
	if e, ok := j.jails(t).Jail("vm-a"); !ok || e.PID != res.PID || e.PIDStart != res.PIDStart || e.Chroot != chroot || e.ExecName != "firecracker" {
		t.Errorf("ledger entry %+v, %v", e, ok)
	}

	if err := j.client.ChownAPISocket(ctx, "vm-a"); err != nil {
		t.Fatalf("chown_api_socket: %v", err)
	}
	if uid, gid := ownerOf(t, filepath.Join(chroot, "run", "firecracker.socket")); uid != jailOwner || gid != jailOwner {
		t.Errorf("API socket owned by %d:%d", uid, gid)
	}

	_, err = j.client.LaunchFirecracker(ctx, op, files)
	wantCode(t, err, privop.CodeBadRequest, "jail for VM vm-a already exists")
	wantCode(t, j.client.CleanupJail(ctx, "vm-a"), privop.CodeBadRequest, "still runs")
	if _, err := os.Lstat(filepath.Join(chroot, "vmlinux")); err != nil {
		t.Errorf("a refused cleanup touched the jail: %v", err)
	}

	// The VM stops (bangerd's business, not the helper's); then the jail goes.
	jailtest.KillAndWait(t, res.PID)
	if err := j.client.CleanupJail(ctx, "vm-a"); err != nil {
		t.Fatalf("cleanup_jail: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(chroot)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail dir left: %v", err)
	}
	if mps := jailtest.MountsUnder(t, j.base); len(mps) > 0 {
		t.Errorf("mounts left: %q", mps)
	}
	if _, ok := j.jails(t).Jail("vm-a"); ok {
		t.Error("ledger still records vm-a")
	}
	if got, _ := os.ReadFile(filepath.Join(j.data, "vm-a", "rootfs.ext4")); string(got) != "via the jail" {
		t.Errorf("host drive after cleanup reads %q", got)
	}
	if err := j.client.CleanupJail(ctx, "vm-a"); err != nil {
		t.Errorf("second cleanup_jail: %v, want nil", err)
	}
	wantCode(t, j.client.ChownAPISocket(ctx, "vm-a"), privop.CodeNotFound, "no jail")
}

// Launches the helper must refuse, each leaving no jail and no record.
func TestServerLaunchRefusals(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	op, files, _ := j.vm(t, "vm-r")
	link := filepath.Join(filepath.Dir(j.fc), "fc-link")
	if err := os.Symlink(j.fc, link); err != nil {
		t.Fatal(err)
	}
	writable := filepath.Join(filepath.Dir(j.jailer), "jailer-gw")
	data, err := os.ReadFile(j.fc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(writable, data, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(writable, 0o777); err != nil {
		t.Fatal(err)
	}
	roRW := append([]*os.File(nil), files...)
	roRW[2] = files[3] // the read-write drive gets a read-only fd

	for _, tc := range []struct {
		name  string
		mod   func(*privop.LaunchFirecracker)
		files []*os.File
		code  privop.Code
		msg   string
	}{
		{"firecracker is a symlink", func(o *privop.LaunchFirecracker) { o.FirecrackerBin = link }, files, privop.CodeForbidden, "is a symlink"},
		{"jailer is world-writable", func(o *privop.LaunchFirecracker) { o.JailerBin = writable }, files, privop.CodeForbidden, "writable by group or others"},
		{"jailer is missing", func(o *privop.LaunchFirecracker) { o.JailerBin = "/nonexistent/jailer" }, files, privop.CodeInternal, "no such file"},
		{"writable drive from a read-only fd", nil, roRW, privop.CodeForbidden, "opened read-write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := op
			if tc.mod != nil {
				tc.mod(&o)
			}
			_, err := j.client.LaunchFirecracker(ctx, o, tc.files)
			wantCode(t, err, tc.code, tc.msg)
			if _, err := os.Lstat(filepath.Join(j.base, "firecracker", "vm-r")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("jail dir after a refused launch: %v", err)
			}
			if ids := j.jails(t).VMIDs(); len(ids) != 0 {
				t.Errorf("ledger records %v after a refused launch", ids)
			}
		})
	}

	// A jail directory already there (not made by this launch): refused,
	// left as it is, not recorded; cleanup_jail will not remove it either.
	stale := filepath.Join(j.base, "firecracker", "vm-r")
	if err := os.MkdirAll(filepath.Join(stale, "root"), 0o711); err != nil {
		t.Fatal(err)
	}
	_, err = j.client.LaunchFirecracker(ctx, op, files)
	wantCode(t, err, privop.CodeBadRequest, "jail for VM vm-r already exists")
	if _, err := os.Lstat(filepath.Join(stale, "root")); err != nil {
		t.Errorf("the existing jail was removed: %v", err)
	}
	if ids := j.jails(t).VMIDs(); len(ids) != 0 {
		t.Errorf("ledger records %v", ids)
	}
	wantCode(t, j.client.CleanupJail(ctx, "vm-r"), privop.CodeForbidden, "not in the helper's ledger")
	if _, err := os.Lstat(filepath.Join(stale, "root")); err != nil {
		t.Errorf("cleanup removed an unrecorded jail: %v", err)
	}
}

// At start-up the helper removes recorded jails whose firecracker is gone
// and keeps the ones still running.
func TestServerReconcilesJails(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	var pids []privop.LaunchFirecrackerResult
	for _, id := range []string{"vm-gone", "vm-live"} {
		op, files, console := j.vm(t, id)
		res, err := j.client.LaunchFirecracker(ctx, op, files)
		if err != nil {
			t.Fatalf("launch %s: %v", id, err)
		}
		t.Cleanup(func() {
			if jail.Alive(res.PID, res.PIDStart) {
				jailtest.KillAndWait(t, res.PID)
			}
		})
		jailtest.WaitReady(t, console)
		pids = append(pids, res)
	}
	jailtest.KillAndWait(t, pids[0].PID)

	// A second helper over the same state, as after a restart.
	srv, err := NewServer(Config{Net: newFakeNet(j.top), Ledger: j.ledger, OwnerUID: jailOwner, OwnerGID: jailOwner,
		StateDir: j.stateDir, JailBase: j.base, Resolver: &fakeResolver{reason: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.reconcileJails()
	if _, err := os.Lstat(filepath.Join(j.base, "firecracker", "vm-gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale jail not removed: %v", err)
	}
	if _, err := os.Lstat(pids[1].Chroot); err != nil {
		t.Errorf("running jail removed: %v", err)
	}
	if ids := j.jails(t).VMIDs(); len(ids) != 1 || ids[0] != "vm-live" {
		t.Errorf("ledger after reconcile: %v", ids)
	}
	if !jail.Alive(pids[1].PID, pids[1].PIDStart) {
		t.Error("reconcile stopped a running firecracker")
	}

	jailtest.KillAndWait(t, pids[1].PID)
	if err := srv.cleanupJail(privop.CleanupJail{VMID: "vm-live"}); err != nil {
		t.Fatal(err)
	}
	if mps := jailtest.MountsUnder(t, j.base); len(mps) > 0 {
		t.Errorf("mounts left: %q", mps)
	}
}
