package jail

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/jail/jailtest"
	"banger/internal/privop"
	"banger/internal/testutil"

	"golang.org/x/sys/unix"
)

// owner is the uid and gid firecracker runs as in these tests: no such
// user needs to exist.
const owner = 4242

// fixture is a jail base, binaries and the files of one VM, opened the way
// bangerd would open them.
type fixture struct {
	top, base   string
	fc, jailer  string
	layout      Layout
	data        string // directory of the VM's files on the host
	console     *os.File
	consolePath string
	kernel      *os.File
	initrd      *os.File
	rw, ro      *os.File
}

func newFixture(t *testing.T, vmID string) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	f := &fixture{base: jailtest.Base(t)}
	f.top = filepath.Dir(f.base)
	f.fc, f.jailer = jailtest.Binaries(t, f.top)
	var err error
	if f.layout, err = NewLayout(f.base, ExecName(f.fc), vmID); err != nil {
		t.Fatal(err)
	}
	f.data = filepath.Join(f.top, "data")
	if err := os.Mkdir(f.data, 0o755); err != nil {
		t.Fatal(err)
	}
	open := func(name, content string, flag int) *os.File {
		p := filepath.Join(f.data, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := os.OpenFile(p, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { file.Close() })
		return file
	}
	f.kernel = open("vmlinux", "kernel image", os.O_RDONLY)
	f.initrd = open("initrd", "initrd image", os.O_RDONLY)
	// Drives are whole sectors: they are served through loop devices.
	f.rw = open("rootfs.ext4", sector("root drive...."), os.O_RDWR)
	f.ro = open("seed.img", sector("seed drive"), os.O_RDONLY)
	f.consolePath = filepath.Join(f.data, "console.log")
	f.console = open("console.log", "", os.O_WRONLY|os.O_APPEND)
	return f
}

func (f *fixture) spec(files ...File) Spec {
	if files == nil {
		files = []File{
			{Role: privop.JailKernel, Name: "vmlinux", F: f.kernel},
			{Role: privop.JailInitrd, Name: "initrd", F: f.initrd},
			{Role: privop.JailDrive, Name: "rootfs.ext4", F: f.rw},
			{Role: privop.JailDrive, Name: "seed.img", ReadOnly: true, F: f.ro},
		}
	}
	return Spec{Layout: f.layout, FirecrackerBin: f.fc, UID: owner, GID: owner, Files: files}
}

// sector pads s with zeros to 4 KiB.
func sector(s string) string { return s + strings.Repeat("\x00", 4096-len(s)) }

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// wantNode checks a file's type, owner and mode.
func wantNode(t *testing.T, p string, typ uint32, uid, gid int, perm uint32) {
	t.Helper()
	st := stat(t, p)
	if st.Mode&unix.S_IFMT != typ || int(st.Uid) != uid || int(st.Gid) != gid || st.Mode&0o7777 != perm {
		t.Errorf("%s: type %#o uid %d gid %d mode %#o; want type %#o uid %d gid %d mode %#o",
			p, st.Mode&unix.S_IFMT, st.Uid, st.Gid, st.Mode&0o7777, typ, uid, gid, perm)
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, sb := stat(t, a), stat(t, b)
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// loopDevice opens a loop device (any block device serves). Without one
// the test fails: staging a block device drive (a dm snapshot, in use) is
// what these tests are for, and a pass that skipped it would be hollow.
func loopDevice(t *testing.T, flag int) *os.File {
	t.Helper()
	var errs []error
	for _, p := range []string{"/dev/loop0", "/dev/loop1", "/dev/loop7"} {
		f, err := os.OpenFile(p, flag, 0)
		if err == nil {
			t.Cleanup(func() { f.Close() })
			return f
		}
		errs = append(errs, err)
	}
	t.Fatalf("no loop device to stand in for a block device drive (load the loop module): %v", errors.Join(errs...))
	return nil
}

// mountOptions returns the per-mount options and optional fields of the
// mount at mp.
func mountOptions(t *testing.T, mp string) (opts, optional string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == mp {
			sep := slices.Index(f, "-")
			opts, optional = f[5], strings.Join(f[6:sep], " ")
		}
	}
	return opts, optional
}

// TestStageStartRemove stages a jail, starts the fake jailer in it, hands
// over its API socket, then tears everything down, checking each outcome
// on the host.
func TestStageStartRemove(t *testing.T) {
	f := newFixture(t, "vm-1")
	blk := loopDevice(t, os.O_RDWR)
	spec := f.spec()
	if blk != nil {
		spec.Files = append(spec.Files,
			File{Role: privop.JailDrive, Name: "blk", F: blk},
			File{Role: privop.JailDrive, Name: "blk-ro", ReadOnly: true, F: loopDevice(t, os.O_RDONLY)})
	}
	holds, err := Stage(spec)
	if err != nil {
		t.Fatalf("Stage: %v", err)
	}
	defer holds.Close()
	l, chroot := f.layout, f.layout.Chroot()

	// Layout, owners and modes: root's alone until the jailer takes the
	// chroot.
	wantNode(t, l.ExecDir(), unix.S_IFDIR, 0, 0, 0o700)
	wantNode(t, l.VMDir(), unix.S_IFDIR, 0, 0, 0o700)
	wantNode(t, chroot, unix.S_IFDIR, 0, 0, 0o700)
	wantNode(t, filepath.Join(chroot, "firecracker"), unix.S_IFREG, 0, 0, 0o755)
	if got, _ := os.ReadFile(filepath.Join(chroot, "firecracker")); !bytes.Contains(got, []byte("fake firecracker")) {
		t.Errorf("firecracker copy holds %q", got)
	}
	wantNode(t, filepath.Join(chroot, LogFile), unix.S_IFREG, owner, owner, 0o600)
	wantNode(t, filepath.Join(chroot, MetricsFile), unix.S_IFREG, owner, owner, 0o600)
	// Root's files on the same filesystem: hard links, the very inodes.
	for _, n := range []string{"vmlinux", "initrd"} {
		if !sameFile(t, filepath.Join(chroot, n), filepath.Join(f.data, n)) {
			t.Errorf("%s in the jail is not a hard link of the host's", n)
		}
	}
	// Regular-file drives sit on loop devices: a node the VM's uid owns
	// (the read-only one root's, readable by the VM's group), bound to
	// the host file.
	wantNode(t, filepath.Join(chroot, "rootfs.ext4"), unix.S_IFBLK, owner, owner, 0o600)
	wantNode(t, filepath.Join(chroot, "seed.img"), unix.S_IFBLK, 0, owner, 0o440)
	if len(holds) != 2 {
		t.Errorf("%d loop devices held, want 2 (one per regular-file drive)", len(holds))
	}
	if blk != nil {
		wantNode(t, filepath.Join(chroot, "blk"), unix.S_IFBLK, owner, owner, 0o600)
		// Read-only: root's, so the VM's uid cannot chmod it writable.
		wantNode(t, filepath.Join(chroot, "blk-ro"), unix.S_IFBLK, 0, owner, 0o440)
		var bst unix.Stat_t
		if err := unix.Fstat(int(blk.Fd()), &bst); err != nil {
			t.Fatal(err)
		}
		if got := stat(t, filepath.Join(chroot, "blk")).Rdev; got != bst.Rdev {
			t.Errorf("device node rdev %d, want %d", got, bst.Rdev)
		}
		// A node cannot be hard-linked out of the jail (the chroot is
		// its own mount), so it cannot outlive the jail and later open
		// whatever device reuses its number.
		out := filepath.Join(filepath.Dir(l.VMDir()), "escaped-node")
		if err := os.Link(filepath.Join(chroot, "blk"), out); !errors.Is(err, unix.EXDEV) {
			os.Remove(out)
			t.Errorf("hard link of the device node out of the jail: %v, want EXDEV", err)
		}
	}

	// Mounts: the private self-bind and the host's libraries; no drive is
	// a mount.
	mps := jailtest.MountsUnder(t, l.VMDir())
	for _, want := range []string{chroot, filepath.Join(chroot, "usr/lib")} {
		if !slices.Contains(mps, want) {
			t.Errorf("%s is not mounted; mounts: %q", want, mps)
		}
	}
	if _, optional := mountOptions(t, chroot); strings.Contains(optional, "shared:") {
		t.Errorf("the chroot's self-bind propagates (%s), want private", optional)
	}
	// Writing through the jail's drive writes the host's file.
	dev, err := os.OpenFile(filepath.Join(chroot, "rootfs.ext4"), os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Write([]byte(sector("written in the jail"))); err != nil {
		t.Fatalf("write through the rw drive: %v", err)
	}
	dev.Close()
	if got, _ := os.ReadFile(filepath.Join(f.data, "rootfs.ext4")); string(got) != sector("written in the jail") {
		t.Errorf("host drive holds %.20q after a write through the jail", got)
	}
	if got, _ := os.ReadFile(filepath.Join(chroot, "seed.img")); string(got) != sector("seed drive") {
		t.Errorf("read-only drive reads %.20q", got)
	}
	if w, err := os.OpenFile(filepath.Join(chroot, "seed.img"), os.O_WRONLY, 0); err == nil {
		if _, err := w.Write([]byte(sector("overwritten"))); err == nil {
			if err := w.Sync(); err == nil {
				t.Error("wrote to the read-only drive")
			}
		}
		w.Close()
	}
	if err := os.WriteFile(filepath.Join(chroot, "usr/lib/planted"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("create a file in the jail's /usr/lib: %v, want EROFS", err)
	}
	for _, lib := range DefaultHostLibs {
		fi, err := os.Lstat(lib)
		if err != nil {
			continue
		}
		if fi.Mode().Type() == os.ModeSymlink {
			host, _ := os.Readlink(lib)
			if got, err := os.Readlink(filepath.Join(chroot, lib)); err != nil || got != host {
				t.Errorf("%s in the jail: %q, %v; want a symlink to %q", lib, got, err, host)
			}
		} else if !slices.Contains(mps, filepath.Join(chroot, lib)) {
			t.Errorf("host dir %s is not bind-mounted in the jail", lib)
		}
	}

	// Start the fake jailer: argv, console, session, environment.
	p, err := Start(JailerArgv(ArgvSpec{JailerBin: f.jailer, FirecrackerBin: f.fc, VMID: l.VMID,
		UID: owner, GID: owner, Base: f.base}), f.console)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if Alive(p.PID, p.StartTime) {
			jailtest.KillAndWait(t, p.PID)
		}
	})
	line := jailtest.WaitReady(t, f.consolePath)
	want := `id=vm-1 uid=4242 gid=4242 cwd=/ session_leader=true stdin_null=true env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]`
	if !strings.HasSuffix(line, want) {
		t.Errorf("fake jailer reported\n %s\nwant it to end\n %s", line, want)
	}
	if !Alive(p.PID, p.StartTime) {
		t.Fatal("the jailer does not run")
	}
	if got, err := StartTime(p.PID); err != nil || got != p.StartTime {
		t.Errorf("StartTime = %d, %v; want %d", got, err, p.StartTime)
	}

	// Dial reaches the API socket the fake listens on, served by the
	// jailed process itself; a peer pid other than the VM's is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alive := func() bool { return Alive(p.PID, p.StartTime) }
	conn, err := Dial(ctx, chroot, privop.JailAPISocket, p.PID, 5*time.Second, alive)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	conn.Close()
	if c, err := Dial(ctx, chroot, privop.JailAPISocket, p.PID+1, time.Second, alive); !errors.Is(err, ErrUnsafe) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Dial expecting another peer pid: %v, want ErrUnsafe", err)
	}
	holds.Close()

	// Stop it, then remove the jail: no process, no mount, no directory;
	// the host's files are still there.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the jailer was not reaped")
	}
	if Alive(p.PID, p.StartTime) {
		t.Error("Alive after the process was reaped")
	}
	jailtest.WaitGone(t, p.PID)
	if err := Remove(l); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if mps := jailtest.MountsUnder(t, l.VMDir()); len(mps) > 0 {
		t.Errorf("mounts left after Remove: %q", mps)
	}
	if _, err := os.Lstat(l.VMDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail dir left after Remove: %v", err)
	}
	for name, want := range map[string]string{"vmlinux": "kernel image", "rootfs.ext4": sector("written in the jail"), "seed.img": sector("seed drive")} {
		if got, err := os.ReadFile(filepath.Join(f.data, name)); err != nil || string(got) != want {
			t.Errorf("host %s after Remove: %.20q, %v", name, got, err)
		}
	}
	if err := Remove(l); err != nil {
		t.Errorf("second Remove: %v, want nil (nothing to do)", err)
	}
}

// A kernel on another filesystem (another mount, here), or one that is
// not root's alone (another user's, or setuid), is copied, root's with the
// VM's group, mode 0440: only root's own files are hard-linked in.
func TestStageCopiesWhatItMustNotLink(t *testing.T) {
	f := newFixture(t, "vm-copy")
	other := filepath.Join(f.top, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Unmount(other, unix.MNT_DETACH); err != nil {
			t.Error(err)
		}
	}()
	for _, tc := range []struct {
		name, path string
		uid        int
		mode       os.FileMode
	}{
		{"another filesystem", filepath.Join(other, "vmlinux"), 0, 0o644},
		{"the owner's", filepath.Join(f.data, "owners-vmlinux"), owner, 0o644},
		{"setuid", filepath.Join(f.data, "setuid-vmlinux"), 0, 0o755 | os.ModeSetuid},
		{"setgid", filepath.Join(f.data, "setgid-vmlinux"), 0, 0o755 | os.ModeSetgid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(tc.path, []byte("kernel "+tc.name), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(tc.path, tc.uid, tc.uid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(tc.path, tc.mode); err != nil {
				t.Fatal(err)
			}
			k, err := os.Open(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			holds, err := Stage(f.spec(File{Role: privop.JailKernel, Name: "vmlinux", F: k}))
			if err != nil {
				t.Fatalf("Stage: %v", err)
			}
			holds.Close()
			staged := filepath.Join(f.layout.Chroot(), "vmlinux")
			wantNode(t, staged, unix.S_IFREG, 0, owner, 0o440)
			if got, _ := os.ReadFile(staged); string(got) != "kernel "+tc.name {
				t.Errorf("copied kernel holds %q", got)
			}
			if sameFile(t, staged, tc.path) {
				t.Error("the kernel was hard-linked, not copied")
			}
			if err := Remove(f.layout); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A jail directory that already exists is refused and left as it is: a
// prepared directory is how a jail gets subverted.
func TestStageRefusesExistingJail(t *testing.T) {
	f := newFixture(t, "vm-2")
	if err := os.MkdirAll(f.layout.VMDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(f.layout.VMDir(), "marker")
	if err := os.WriteFile(marker, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Stage(f.spec())
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "jail for VM vm-2 already exists") {
		t.Fatalf("Stage over an existing jail = %v, want ErrExists", err)
	}
	if got, _ := os.ReadFile(marker); string(got) != "keep" {
		t.Error("the existing jail was changed")
	}
	if mps := jailtest.MountsUnder(t, f.layout.VMDir()); len(mps) > 0 {
		t.Errorf("mounts made under a refused jail: %q", mps)
	}

	// A symlink where the VM's directory goes: refused, target untouched.
	f2 := newFixture(t, "vm-3")
	elsewhere := filepath.Join(f2.top, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f2.layout.ExecDir(), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, f2.layout.VMDir()); err != nil {
		t.Fatal(err)
	}
	if _, err := Stage(f2.spec()); !errors.Is(err, ErrExists) {
		t.Fatalf("Stage over a symlinked jail dir = %v, want ErrExists", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("staging wrote through the symlink: %v", entries)
	}
}

// A failure half-way leaves nothing: no mount, no directory.
func TestStageUndoesOnFailure(t *testing.T) {
	f := newFixture(t, "vm-4")
	dir, err := os.Open(f.data)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	opath, err := os.OpenFile(filepath.Join(f.data, "rootfs.ext4"), unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer opath.Close()
	devNull, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	kernel := File{Role: privop.JailKernel, Name: "vmlinux", F: f.kernel}
	rwDrive := File{Role: privop.JailDrive, Name: "rootfs.ext4", F: f.rw} // on a loop before the failure
	for _, tc := range []struct {
		name string
		bad  File
		want string
	}{
		{"writable drive from a read-only fd", File{Role: privop.JailDrive, Name: "d", F: f.ro}, "opened read-write"},
		{"O_PATH drive", File{Role: privop.JailDrive, Name: "d", ReadOnly: true, F: opath}, "O_PATH"},
		{"directory drive", File{Role: privop.JailDrive, Name: "d", ReadOnly: true, F: dir}, "regular file or a block device"},
		{"character device drive", File{Role: privop.JailDrive, Name: "d", ReadOnly: true, F: devNull}, "regular file or a block device"},
		{"character device kernel", File{Role: privop.JailInitrd, Name: "d", F: devNull}, "want a regular file"},
		{"name of the exec copy", File{Role: privop.JailInitrd, Name: "firecracker", F: f.initrd}, "file exists"},
		{"name of the log", File{Role: privop.JailDrive, Name: LogFile, ReadOnly: true, F: f.ro}, "file exists"},
		{"path as a name", File{Role: privop.JailDrive, Name: "../escape", ReadOnly: true, F: f.ro}, "single path element"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Stage(f.spec(kernel, rwDrive, tc.bad))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Stage = %v, want an error mentioning %q", err, tc.want)
			}
			if errors.Is(err, ErrLeftBehind) {
				t.Fatalf("undo failed: %v", err)
			}
			if mps := jailtest.MountsUnder(t, f.top); len(mps) > 0 {
				t.Errorf("mounts left: %q", mps)
			}
			if _, err := os.Lstat(f.layout.VMDir()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("jail dir left: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(f.base, "escape")); !errors.Is(err, os.ErrNotExist) {
				t.Error("a file was created outside the chroot")
			}
		})
	}
	if got, _ := os.ReadFile(filepath.Join(f.data, "rootfs.ext4")); string(got) != sector("root drive....") {
		t.Errorf("host drive changed by failed stagings: %.20q", got)
	}
}

// Binaries another user controls are refused, and nothing is staged.
func TestStageRefusesUnsafeBinaries(t *testing.T) {
	f := newFixture(t, "vm-5")
	ownerDir := filepath.Join(f.top, "ownerbin")
	if err := os.Mkdir(ownerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ownerDir, owner, owner); err != nil {
		t.Fatal(err)
	}
	copyBin := func(dir, name string, uid int, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(f.fc)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	binDir := filepath.Dir(f.fc)
	link := filepath.Join(binDir, "fc-link")
	if err := os.Symlink(f.fc, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"symlink", link, "is a symlink"},
		{"owned by the owner", copyBin(binDir, "fc-owned", owner, 0o755), "owned by uid 4242"},
		{"group writable", copyBin(binDir, "fc-gw", 0, 0o775), "writable by group or others"},
		{"in a directory the owner owns", copyBin(ownerDir, "firecracker", 0, 0o755), "owned by uid 4242"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBinary(tc.path)
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckBinary = %v, want ErrUnsafe mentioning %q", err, tc.want)
			}
			spec := f.spec()
			spec.FirecrackerBin = tc.path
			spec.Layout.ExecName = ExecName(tc.path)
			if _, err := Stage(spec); !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Stage = %v, want ErrUnsafe", err)
			}
			if _, err := os.Lstat(spec.Layout.ExecDir()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Stage created %s for a refused binary", spec.Layout.ExecDir())
			}
		})
	}
	if err := CheckBinary(f.fc); err != nil {
		t.Errorf("the root-owned binary is refused: %v", err)
	}
}

// A base on a nodev mount, or below a directory the owner owns, is refused.
func TestCheckBaseRefuses(t *testing.T) {
	f := newFixture(t, "vm-6")
	nodev := filepath.Join(f.top, "nodev")
	if err := os.Mkdir(nodev, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", nodev, "tmpfs", unix.MS_NODEV, "size=1m,mode=0711"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Unmount(nodev, unix.MNT_DETACH); err != nil {
			t.Error(err)
		}
	}()
	if err := CheckBase(nodev); err == nil || !strings.Contains(err.Error(), "nodev") {
		t.Errorf("CheckBase on a nodev mount = %v, want refused", err)
	}
	ownerDir := filepath.Join(f.top, "ownerdir")
	if err := os.Mkdir(ownerDir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ownerDir, 0o711); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(ownerDir, "jail")
	if err := os.Mkdir(sub, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ownerDir, owner, owner); err != nil {
		t.Fatal(err)
	}
	if err := CheckBase(sub); !errors.Is(err, ErrUnsafe) {
		t.Errorf("CheckBase below an owner's directory = %v, want ErrUnsafe", err)
	}
	if err := CheckBase(f.base); err != nil {
		t.Errorf("CheckBase(good base) = %v", err)
	}
}

// Each staging destination refuses a symlink or a hard link to a root-owned
// file planted at its name, and leaves that file as it was.
func TestStagingRefusesPlantedNames(t *testing.T) {
	f := newFixture(t, "vm-7")
	stage := filepath.Join(f.top, "stage")
	if err := os.Mkdir(stage, 0o711); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(stage, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	target := filepath.Join(f.top, "secret")
	if err := os.WriteFile(target, []byte("root's secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	targetDir := filepath.Join(f.top, "secretdir")
	if err := os.Mkdir(targetDir, 0o700); err != nil {
		t.Fatal(err)
	}
	fcBin, err := os.Open(f.fc)
	if err != nil {
		t.Fatal(err)
	}
	defer fcBin.Close()
	const name = "dest"
	type create struct {
		at string // the name it creates, where the plant goes
		fn func() error
	}
	creates := map[string]create{
		"kernel link": {name, func() error { return linkOrCopy(dirfd, dirfd, name, f.kernel, owner) }},
		"kernel copy": {name, func() error { return copyFile(dirfd, name, f.kernel, 12, 0, owner) }},
		"fc.log":      {name, func() error { return createEmpty(dirfd, name, owner, owner) }},
		"firecracker": {name, func() error { return copyExec(dirfd, name, fcBin) }},
		"directory":   {name, func() error { _, err := mkdirAt(dirfd, name, 0o755); return err }},
		// The parent of a library bind (usr of /usr/lib), and /lib itself
		// (a bind, or a symlink on a merged-/usr host).
		"host lib parent": {"usr", func() error { return bindHostDir(dirfd, "/usr/lib") }},
		"host lib":        {"lib", func() error { return bindHostDir(dirfd, "/lib") }},
	}
	if blk := loopDevice(t, os.O_RDWR); blk != nil {
		creates["device node"] = create{name, func() error { return mknodDevice(dirfd, name, blk, false, owner, owner) }}
	}
	plants := map[string]func(p string) error{
		"symlink to file":  func(p string) error { return os.Symlink(target, p) },
		"symlink to dir":   func(p string) error { return os.Symlink(targetDir, p) },
		"hardlink to file": func(p string) error { return os.Link(target, p) },
	}
	for cname, c := range creates {
		for pname, plant := range plants {
			t.Run(cname+"/"+pname, func(t *testing.T) {
				p := filepath.Join(stage, c.at)
				if err := plant(p); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(p)
				before, _ := os.Lstat(p)
				if err := c.fn(); err == nil {
					t.Fatal("created over a planted name")
				}
				if got, _ := os.ReadFile(target); string(got) != "root's secret" {
					t.Errorf("target content now %q", got)
				}
				wantNode(t, target, unix.S_IFREG, 0, 0, 0o600)
				wantNode(t, targetDir, unix.S_IFDIR, 0, 0, 0o700)
				if entries, _ := os.ReadDir(targetDir); len(entries) != 0 {
					t.Errorf("created in the symlinked directory: %v", entries)
				}
				if mps := jailtest.MountsUnder(t, f.top); len(mps) > 0 {
					t.Errorf("mounted despite the refusal: %q", mps)
				}
				if after, err := os.Lstat(p); err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
					t.Errorf("the planted name was replaced: %v", err)
				}
				if entries, _ := os.ReadDir(stage); len(entries) != 1 {
					t.Errorf("staging dir holds %v, want only the plant", entries)
				}
			})
		}
	}
	if _, err := os.Lstat("/" + name); err == nil {
		t.Errorf("/%s exists: staging created outside its directory", name)
	}
}

// Dial refuses a symlink anywhere on the socket's path, anything but a
// socket, and a socket another process serves (a host socket hard-linked
// in, say), without handing out a connection; it waits, bounded, for a
// socket that is not there yet.
func TestDialRefusesWhatIsNotTheJailSocket(t *testing.T) {
	f := newFixture(t, "vm-8")
	chroot := filepath.Join(f.top, "chroot")
	if err := os.Mkdir(chroot, 0o711); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(chroot, "run")
	realRun := filepath.Join(f.top, "realrun")
	if err := os.Mkdir(realRun, 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket outside the jail, served by this process (as a host
	// service root can reach would be).
	outside, err := net.Listen("unix", filepath.Join(realRun, "firecracker.socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	accepted := make(chan struct{}, 8)
	go func() {
		for {
			c, err := outside.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	ctx := context.Background()
	const firecrackerPID = 1 // not this process: the outside socket's server
	dial := func() error {
		c, err := Dial(ctx, chroot, privop.JailAPISocket, firecrackerPID, time.Second, nil)
		if c != nil {
			c.Close()
		}
		return err
	}
	noConnection := func(what string) {
		t.Helper()
		select {
		case <-accepted:
			// A connection that was then refused still reached the
			// server: only the peer check stops it from being handed
			// out, which is what the hard-link case tests.
			if what != "hard link" {
				t.Errorf("%s: the outside socket was connected to", what)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}

	if err := os.Symlink(realRun, run); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, ErrUnsafe) {
		t.Errorf("dial through a symlinked run = %v, want ErrUnsafe", err)
	}
	noConnection("symlinked run")
	if err := os.Remove(run); err != nil {
		t.Fatal(err)
	}

	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "firecracker.socket")
	if err := os.Symlink(filepath.Join(realRun, "firecracker.socket"), sock); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, ErrUnsafe) {
		t.Errorf("dial of a symlinked socket = %v, want ErrUnsafe", err)
	}
	noConnection("symlinked socket")
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, ErrUnsafe) {
		t.Errorf("dial of a regular file = %v, want ErrUnsafe", err)
	}
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}

	// The outside socket hard-linked in: served by another process than
	// the VM's firecracker.
	if err := os.Link(filepath.Join(realRun, "firecracker.socket"), sock); err != nil {
		t.Fatal(err)
	}
	if err := dial(); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "not the VM's firecracker") {
		t.Errorf("dial of a hard-linked host socket = %v, want ErrUnsafe", err)
	}
	noConnection("hard link")
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}

	// Missing: waits out its bound; stops at once when firecracker is gone.
	start := time.Now()
	if _, err := Dial(ctx, chroot, privop.JailAPISocket, 0, 200*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "not there within") {
		t.Errorf("dial of a missing socket = %v, want a wait error", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("waited %v for a 200ms bound", took)
	}
	if _, err := Dial(ctx, chroot, privop.JailAPISocket, 0, time.Second, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("dial with firecracker gone = %v, want it to say so", err)
	}

	// The real thing: a socket in the jail, served by the expected pid.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := Dial(ctx, chroot, privop.JailAPISocket, os.Getpid(), time.Second, nil)
	if err != nil {
		t.Fatalf("dial of the API socket: %v", err)
	}
	c.Close()
}
