package helper

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/jail"
	"banger/internal/jail/jailtest"
	"banger/internal/privop"
	"banger/internal/testutil"

	"golang.org/x/sys/unix"
)

// The helper's test binary doubles as the fake jailer (see jailtest).
func init() { jailtest.MaybeRunFakeJailer() }

const jailOwner = 4242

// vmmUIDBase is the first VMM uid in these tests; no user needs to have it.
const vmmUIDBase = 5000

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
	j.harness = startServer(t, func(c *Config) {
		c.JailBase = base
		c.OwnerUID, c.OwnerGID = jailOwner, jailOwner
		c.FirecrackerBin, c.JailerBin = j.fc, j.jailer
		c.VMMUIDBase, c.VMMUIDCount = vmmUIDBase, 4
		c.Subnet = netip.MustParsePrefix("172.31.9.0/24")
	})
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
	// Drives are whole sectors: the jail serves them through loop devices.
	open("rootfs.ext4", sector("root drive"), os.O_RDWR)
	open("seed.img", sector("seed"), os.O_RDONLY)
	op := privop.LaunchFirecracker{VMID: vmID, Files: []privop.JailFile{
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

// sector pads s with zeros to 4 KiB.
func sector(s string) string { return s + strings.Repeat("\x00", 4096-len(s)) }

// ownerCannotTouch checks, as the owner, that no path under dir (listed as
// root) can be hard-linked or moved out, opened, or, for a socket,
// connected to. Each attempt that works is undone and reported.
func ownerCannotTouch(t *testing.T, dir, ownerDir string) int {
	t.Helper()
	var paths []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	testutil.AsUser(t, jailOwner, jailOwner, func() {
		for i, p := range paths {
			fi, err := os.Lstat(p)
			if err == nil {
				t.Errorf("as the owner, lstat %s works (%v): the jail is not closed to them", p, fi.Mode())
			}
			kept := filepath.Join(ownerDir, "kept")
			if err := os.Link(p, kept); err == nil {
				os.Remove(kept)
				t.Errorf("as the owner, hard-linked %s out of the jail", p)
			}
			moved := filepath.Join(ownerDir, "moved")
			if err := os.Rename(p, moved); err == nil {
				_ = os.Rename(moved, p)
				t.Errorf("as the owner, moved %s out of the jail", p)
			}
			if f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
				f.Close()
				t.Errorf("as the owner, opened %s", p)
			}
			if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
				c.Close()
				t.Errorf("as the owner, connected to %s", p)
			}
			_ = i
		}
	})
	return len(paths)
}

// TestServerJailLifecycle drives the ops through bangerd's client with
// real fds: launch as a VMM uid of the VM's own (the tap handed to it),
// the API socket reached only through the helper, nothing of the jail
// reachable by the owner, refusals while running, signal, cleanup.
func TestServerJailLifecycle(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	if err := j.client.Do(ctx, privop.EnsureBridge{Bridge: "br-fc-test", Gateway: "172.31.9.1/24", MTU: 1500}, nil); err != nil {
		t.Fatal(err)
	}
	if err := j.client.Do(ctx, privop.CreateTap{Tap: "tap-fc-vma", Bridge: "br-fc-test", MTU: 1500, IP: "172.31.9.2"}, nil); err != nil {
		t.Fatal(err)
	}
	op, files, console := j.vm(t, "vm-a")
	op.Tap = "tap-fc-vma"
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
	if res.Chroot != chroot || res.PID <= 0 || !jail.Alive(res.PID, res.PIDStart) || res.UID != vmmUIDBase {
		t.Fatalf("launch answered %+v; want chroot %s, a live pid and uid %d", res, chroot, vmmUIDBase)
	}
	line := jailtest.WaitReady(t, console)
	if !strings.Contains(line, "id=vm-a uid=5000 gid=5000 cwd=/ session_leader=true stdin_null=true") {
		t.Errorf("fake jailer reported %q", line)
	}
	if got := j.net.taps["tap-fc-vma"]; !strings.Contains(got, "owner=5000:5000") {
		t.Errorf("tap after launch: %q, want it handed to the VM's uid", got)
	}
	// Files arrived in their roles: the drive is the host's file, through
	// a loop device.
	dev, err := os.OpenFile(filepath.Join(chroot, "rootfs.ext4"), os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Write([]byte(sector("via the jail"))); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if got, _ := os.ReadFile(filepath.Join(j.data, "vm-a", "rootfs.ext4")); string(got) != sector("via the jail") {
		t.Errorf("host drive reads %.20q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(chroot, "vmlinux")); string(got) != "kernel" {
		t.Errorf("kernel in the jail reads %q", got)
	}
	// The kernel is root's copy from the boot cache, not the caller's file.
	if fi, err := os.Stat(filepath.Join(chroot, "vmlinux")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 || fi.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Errorf("kernel in the jail: %v, want root's, linked from the boot cache", err)
	}
	// Recorded, with the process and its uid.
	if e, ok := j.jails(t).Jail("vm-a"); !ok || e.PID != res.PID || e.PIDStart != res.PIDStart || e.Chroot != chroot ||
		e.ExecName != "firecracker" || e.UID != vmmUIDBase || e.Tap != "tap-fc-vma" {
		t.Errorf("ledger entry %+v, %v", e, ok)
	}

	// bangerd reaches the API socket through the helper only.
	conn, err := j.client.DialJail(ctx, "vm-a", privop.SocketAPI, time.Second)
	if err != nil {
		t.Fatalf("dial_jail api: %v", err)
	}
	conn.Close()
	_, err = j.client.DialJail(ctx, "vm-a", privop.SocketVsock, 100*time.Millisecond)
	wantCode(t, err, privop.CodeInternal, "not there within")

	// Nothing of the jail can be reached or kept by the owner.
	ownerDir := filepath.Join(j.top, "ownerdir")
	if err := os.Mkdir(ownerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ownerDir, jailOwner, jailOwner); err != nil {
		t.Fatal(err)
	}
	if n := ownerCannotTouch(t, filepath.Join(j.base, "firecracker"), ownerDir); n < 8 {
		t.Errorf("only %d paths in the jail were tried", n)
	}

	_, err = j.client.LaunchFirecracker(ctx, op, files)
	wantCode(t, err, privop.CodeBadRequest, "jail for VM vm-a already exists")
	wantCode(t, j.client.CleanupJail(ctx, "vm-a"), privop.CodeBadRequest, "still runs")
	if _, err := os.Lstat(filepath.Join(chroot, "vmlinux")); err != nil {
		t.Errorf("a refused cleanup touched the jail: %v", err)
	}

	// bangerd stops the VM through the helper; then the jail goes, and so
	// does the loop device the drive sat on.
	if err := j.client.SignalVMM(ctx, "vm-a", privop.SignalKill); err != nil {
		t.Fatalf("signal_vmm: %v", err)
	}
	jailtest.WaitGone(t, res.PID)
	if err := j.client.SignalVMM(ctx, "vm-a", privop.SignalTerm); err != nil {
		t.Errorf("signal_vmm of a firecracker already gone: %v, want nil", err)
	}
	if err := j.client.CleanupJail(ctx, "vm-a"); err != nil {
		t.Fatalf("cleanup_jail: %v", err)
	}
	if _, err := os.Lstat(filepath.Dir(chroot)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail dir left: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(j.base, "firecracker")); len(ents) != 0 {
		t.Errorf("left under the jail base: %v", ents)
	}
	if mps := jailtest.MountsUnder(t, j.base); len(mps) > 0 {
		t.Errorf("mounts left: %q", mps)
	}
	if _, ok := j.jails(t).Jail("vm-a"); ok {
		t.Error("ledger still records vm-a")
	}
	if loops := loopsBackedBy(t, filepath.Join(j.data, "vm-a")); len(loops) > 0 {
		t.Errorf("loop devices still bound to the VM's drives: %v", loops)
	}
	if got, _ := os.ReadFile(filepath.Join(j.data, "vm-a", "rootfs.ext4")); string(got) != sector("via the jail") {
		t.Errorf("host drive after cleanup reads %.20q", got)
	}
	if err := j.client.CleanupJail(ctx, "vm-a"); err != nil {
		t.Errorf("second cleanup_jail: %v, want nil", err)
	}
	_, err = j.client.DialJail(ctx, "vm-a", privop.SocketAPI, 0)
	wantCode(t, err, privop.CodeNotFound, "no jail")
	wantCode(t, j.client.SignalVMM(ctx, "vm-a", privop.SignalKill), privop.CodeNotFound, "no firecracker")
}

// loopsBackedBy lists the loop devices whose backing file is below dir.
func loopsBackedBy(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Launches the helper must refuse, each leaving no jail and no record,
// and running nothing: binaries the install pinned that root would not
// run, and fds that do not grant what their use needs.
func TestServerLaunchRefusals(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	op, files, _ := j.vm(t, "vm-r")
	link := filepath.Join(filepath.Dir(j.fc), "fc-link")
	if err := os.Symlink(j.fc, link); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(j.jailer)
	if err != nil {
		t.Fatal(err)
	}
	copyAs := func(name string, mode os.FileMode) string {
		p := filepath.Join(filepath.Dir(j.jailer), name)
		if err := os.WriteFile(p, data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writable := copyAs("jailer-gw", 0o777)
	setuid := copyAs("jailer-suid", 0o755|os.ModeSetuid)
	setgid := copyAs("firecracker-sgid", 0o755|os.ModeSetgid)
	roRW := append([]*os.File(nil), files...)
	roRW[2] = files[3] // the read-write drive gets a read-only fd

	for _, tc := range []struct {
		name       string
		fc, jailer string
		files      []*os.File
		code       privop.Code
		msg        string
	}{
		{"firecracker is a symlink", link, j.jailer, files, privop.CodeForbidden, "is a symlink"},
		{"jailer is world-writable", j.fc, writable, files, privop.CodeForbidden, "writable by group or others"},
		{"jailer is setuid", j.fc, setuid, files, privop.CodeForbidden, "setuid or setgid"},
		{"firecracker is setgid", setgid, j.jailer, files, privop.CodeForbidden, "setuid or setgid"},
		{"jailer is missing", j.fc, "/nonexistent/jailer", files, privop.CodeForbidden, "no such file"},
		{"none pinned", "", "", files, privop.CodeForbidden, "no firecracker or jailer pinned"},
		{"writable drive from a read-only fd", j.fc, j.jailer, roRW, privop.CodeForbidden, "opened read-write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := NewServer(Config{Net: j.net, Ledger: j.ledger, OwnerUID: jailOwner, OwnerGID: jailOwner,
				StateDir: j.stateDir, JailBase: j.base, Resolver: &fakeResolver{reason: "test"},
				FirecrackerBin: tc.fc, JailerBin: tc.jailer, VMMUIDBase: vmmUIDBase, VMMUIDCount: 4})
			if err != nil {
				t.Fatal(err)
			}
			_, err = srv.launchFirecracker(ctx, op, tc.files)
			wantCode(t, err, tc.code, tc.msg)
			if pids := jailtest.FakeJailers(); len(pids) > 0 {
				t.Errorf("a refused launch ran the jailer: %v", pids)
			}
			if _, err := os.Lstat(filepath.Join(j.base, "firecracker", "vm-r")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("jail dir after a refused launch: %v", err)
			}
			if ids := j.jails(t).VMIDs(); len(ids) != 0 {
				t.Errorf("ledger records %v after a refused launch", ids)
			}
		})
	}

	// A tap the helper did not create is not handed to a VM.
	o := op
	o.Tap = "tap-fc-nope"
	_, err = j.client.LaunchFirecracker(ctx, o, files)
	wantCode(t, err, privop.CodeForbidden, "was not created by banger")

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

// cleanupAfter stops a launched VM's process and removes its jail when
// the test ends.
func (j *jailHarness) cleanupAfter(t *testing.T, id string, res privop.LaunchFirecrackerResult) {
	t.Cleanup(func() {
		if jail.Alive(res.PID, res.PIDStart) {
			jailtest.KillAndWait(t, res.PID)
		}
		if err := j.client.CleanupJail(ctxT(t), id); err != nil {
			t.Errorf("cleanup_jail %s: %v", id, err)
		}
	})
}

// Each running jail has a uid of its own: the lowest free one, skipping
// uids a process already runs as; a range used up is refused.
func TestServerVMMUIDs(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	var uids []int
	for _, id := range []string{"vm-u1", "vm-u2"} {
		op, files, console := j.vm(t, id)
		res, err := j.client.LaunchFirecracker(ctx, op, files)
		if err != nil {
			t.Fatalf("launch %s: %v", id, err)
		}
		j.cleanupAfter(t, id, res)
		jailtest.WaitReady(t, console)
		uids = append(uids, res.UID)
	}
	if uids[0] != vmmUIDBase || uids[1] != vmmUIDBase+1 {
		t.Errorf("uids %v, want %d and %d", uids, vmmUIDBase, vmmUIDBase+1)
	}
	// A process running as the next uid keeps it from being given out.
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: vmmUIDBase + 2, Gid: vmmUIDBase + 2}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	op, files, console := j.vm(t, "vm-u3")
	res, err := j.client.LaunchFirecracker(ctx, op, files)
	if err != nil {
		t.Fatalf("launch vm-u3: %v", err)
	}
	j.cleanupAfter(t, "vm-u3", res)
	jailtest.WaitReady(t, console)
	if res.UID != vmmUIDBase+3 {
		t.Errorf("uid %d, want %d (the one before is a running process's)", res.UID, vmmUIDBase+3)
	}
	op, files, _ = j.vm(t, "vm-u4")
	_, err = j.client.LaunchFirecracker(ctx, op, files)
	wantCode(t, err, privop.CodeBusy, "VMM uids")
	if _, err := os.Lstat(filepath.Join(j.base, "firecracker", "vm-u4")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail dir after a refused launch: %v", err)
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
		StateDir: j.stateDir, JailBase: j.base, Resolver: &fakeResolver{reason: "test"},
		FirecrackerBin: j.fc, JailerBin: j.jailer, VMMUIDBase: vmmUIDBase, VMMUIDCount: 4})
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

// Loop devices are the host's: past MaxLoops held for running jails, a
// launch is refused as busy and leaves nothing.
func TestServerBoundsLoops(t *testing.T) {
	j := startJailServer(t)
	ctx := ctxT(t)
	srv, err := NewServer(Config{Net: j.net, Ledger: j.ledger, OwnerUID: jailOwner, OwnerGID: jailOwner,
		StateDir: j.stateDir, JailBase: j.base, Resolver: &fakeResolver{reason: "test"},
		FirecrackerBin: j.fc, JailerBin: j.jailer, VMMUIDBase: vmmUIDBase, VMMUIDCount: 4, MaxLoops: 3})
	if err != nil {
		t.Fatal(err)
	}
	op, files, console := j.vm(t, "vm-l1") // two file drives: two loops
	res, err := srv.launchFirecracker(ctx, op, files)
	if err != nil {
		t.Fatalf("launch: %v", err)
	}
	t.Cleanup(func() {
		if jail.Alive(res.PID, res.PIDStart) {
			jailtest.KillAndWait(t, res.PID)
		}
		if err := srv.cleanupJail(privop.CleanupJail{VMID: "vm-l1"}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	jailtest.WaitReady(t, console)
	op2, files2, _ := j.vm(t, "vm-l2")
	_, err = srv.launchFirecracker(ctx, op2, files2)
	wantCode(t, err, privop.CodeBusy, "holds 2 loop devices for running VMs, and at most 3")
	if _, err := os.Lstat(filepath.Join(j.base, "firecracker", "vm-l2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail dir after a refused launch: %v", err)
	}
}
