package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/test/fakes/internal/fakeargs"
	"banger/test/fakes/internal/sidecarproto"
)

var argSpec = fakeargs.Spec{
	Bools:  []string{"daemonize", "new-pid-ns", "version", "help"},
	Values: []string{"id", "exec-file", "uid", "gid", "chroot-base-dir", "netns", "cgroup-version", "parent-cgroup"},
	Multi:  []string{"cgroup", "resource-limit"},
}

// defaultNoFile is the jailer's RLIMIT_NOFILE when --resource-limit does not
// set one (resource_limits.rs).
const defaultNoFile = 2048

// jailConfig is a validated command line.
type jailConfig struct {
	id            string
	execFile      string // canonical path
	execName      string
	uid, gid      int
	chroot        string // <base>/<exec-name>/<id>/root
	netns         string
	cgroupVersion int
	parentCgroup  string
	cgroups       []cgroupSetting
	fsize         *uint64
	noFile        uint64
	uffdMinor     *uint32 // the host's userfaultfd misc minor, if any
	fcArgs        []string
}

// parseConfig validates args like the real jailer's Env::new. A nil config
// with a nil error means --version or --help was handled.
func parseConfig(args []string) (*jailConfig, error) {
	p, err := fakeargs.Parse(argSpec, args)
	if err != nil {
		return nil, fmt.Errorf("parse arguments: %w", err)
	}
	if p.Bools["version"] {
		fmt.Println("Jailer v" + jailerVersion)
		return nil, nil
	}
	if p.Bools["help"] {
		fmt.Println("fake jailer v" + jailerVersion + " (test double): see test/fakes/jailer")
		return nil, nil
	}
	if p.Bools["daemonize"] {
		return nil, errors.New("--daemonize is not supported")
	}
	if p.Bools["new-pid-ns"] {
		return nil, errors.New("--new-pid-ns is not supported")
	}
	for _, req := range []string{"id", "exec-file", "uid", "gid"} {
		if _, ok := p.Values[req]; !ok {
			return nil, fmt.Errorf("missing required argument --%s", req)
		}
	}
	c := &jailConfig{id: p.Values["id"], netns: p.Values["netns"], fcArgs: p.Extra, noFile: defaultNoFile}
	if !validID(c.id) {
		return nil, fmt.Errorf("invalid instance ID %q: it must be 1 to 64 characters, each an ASCII letter, digit or '-'", c.id)
	}
	if c.uid, err = parseID("uid", p.Values["uid"]); err != nil {
		return nil, err
	}
	if c.gid, err = parseID("gid", p.Values["gid"]); err != nil {
		return nil, err
	}

	exe, err := filepath.EvalSymlinks(p.Values["exec-file"])
	if err == nil {
		exe, err = filepath.Abs(exe)
	}
	if err != nil {
		return nil, fmt.Errorf("canonicalize exec file %s: %w", p.Values["exec-file"], err)
	}
	if st, err := os.Stat(exe); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("exec file %s is not a file", exe)
	}
	c.execFile, c.execName = exe, filepath.Base(exe)

	base := "/srv/jailer"
	if v, ok := p.Values["chroot-base-dir"]; ok {
		base = v
	}
	if base, err = filepath.Abs(base); err != nil {
		return nil, fmt.Errorf("resolve chroot base dir: %w", err)
	}
	c.chroot = filepath.Join(base, c.execName, c.id, "root")
	c.uffdMinor = userfaultfdMinor()

	c.cgroupVersion = 1
	if v, ok := p.Values["cgroup-version"]; ok {
		switch v {
		case "1":
		case "2":
			c.cgroupVersion = 2
		default:
			return nil, fmt.Errorf("invalid cgroup version %q: it must be 1 or 2", v)
		}
	}
	c.parentCgroup = c.execName
	if v, ok := p.Values["parent-cgroup"]; ok {
		c.parentCgroup = v
	}
	if !validParentCgroup(c.parentCgroup) {
		return nil, fmt.Errorf("invalid parent cgroup path %q: it must be relative, without . or .. components", c.parentCgroup)
	}
	for _, a := range p.Multi["cgroup"] {
		s, err := parseCgroup(a)
		if err != nil {
			return nil, err
		}
		c.cgroups = append(c.cgroups, s)
	}
	for _, a := range p.Multi["resource-limit"] {
		name, val, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("invalid resource limit %q: expected <resource>=<value>", a)
		}
		n, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid resource limit value %q: %w", val, err)
		}
		switch name {
		case "fsize":
			c.fsize = &n
		case "no-file":
			c.noFile = n
		default:
			return nil, fmt.Errorf("invalid resource limit argument %q: expected fsize or no-file", name)
		}
	}
	return c, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if c != '-' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

func parseID(name, v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid --%s %q: %w", name, v, err)
	}
	return int(n), nil
}

func validParentCgroup(p string) bool {
	if p == "" || filepath.IsAbs(p) {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "." || c == ".." {
			return false
		}
	}
	return true
}

// runJailer builds the jail and execs firecracker in it, in the real
// jailer's order. It returns only on failure.
func runJailer(args []string) error {
	startUs := clockUs(unix.CLOCK_MONOTONIC)
	startCPUUs := clockUs(unix.CLOCK_PROCESS_CPUTIME_ID)
	c, err := parseConfig(args)
	if err != nil || c == nil {
		return err
	}
	if fd3Busy {
		return errors.New("fd 3 is taken by the Go runtime; cannot hand the sidecar channel to firecracker")
	}
	if err := c.resolveBase(); err != nil {
		return err
	}
	if err := os.MkdirAll(c.chroot, 0o777); err != nil {
		return fmt.Errorf("create directory %s: %w", c.chroot, rustErr(err))
	}
	if err := copyExec(c.execFile, filepath.Join(c.chroot, c.execName), c.uid, c.gid); err != nil {
		return err
	}
	if c.netns != "" {
		if err := joinNetns(c.netns); err != nil {
			return err
		}
	}
	if err := c.setRlimits(); err != nil {
		return err
	}
	// The sidecar starts before the cgroups are joined and before the
	// mount namespace changes: it and QEMU stay out of the VM's cgroup, so
	// the caller can remove that cgroup as soon as firecracker has exited
	// while the sidecar is still cleaning up, and keep the host's mounts.
	fcEnd, err := c.startSidecar()
	if err != nil {
		return err
	}
	if err := setupCgroups(c.cgroupVersion, c.parentCgroup, c.id, c.cgroups, os.Getpid()); err != nil {
		return err
	}
	if err := enterJail(c.chroot); err != nil {
		return err
	}
	if err := c.setupJail(); err != nil {
		return err
	}
	parentCPUUs := clockUs(unix.CLOCK_PROCESS_CPUTIME_ID) - startCPUUs
	if err := dropPrivileges(c.uid, c.gid); err != nil {
		return err
	}
	return c.exec(fcEnd, startUs, parentCPUUs)
}

// resolveBase canonicalizes the chroot base, which must be an existing
// directory (the jailer does not create it), and places the chroot in it.
func (c *jailConfig) resolveBase() error {
	base := filepath.Dir(filepath.Dir(filepath.Dir(c.chroot)))
	resolved, err := filepath.EvalSymlinks(base)
	if err != nil {
		return fmt.Errorf("canonicalize path %s: %w", base, rustErr(err))
	}
	if st, err := os.Stat(resolved); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a directory", resolved)
	}
	c.chroot = filepath.Join(resolved, c.execName, c.id, "root")
	return nil
}

func clockUs(clock int32) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano() / 1000)
}

// copyExec copies the exec file into the jail. Like the jailer since
// v1.15, the destination is opened without following a symlink and a file
// with other hard links is refused, so a planted link cannot redirect the
// root-owned write. Like the jailer, a new destination gets the source's
// mode and an existing one keeps its own, and it is written over from the
// start without being truncated. Unlike it, a destination that is not a
// regular file is refused rather than written to.
func copyExec(src, dst string, uid, gid int) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy exec file: %w", err)
	}
	defer in.Close()
	srcSt, err := in.Stat()
	if err != nil {
		return fmt.Errorf("copy exec file: %w", err)
	}
	fd, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(srcSt.Mode().Perm()))
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("copy exec file: refusing destination %s: it is a symlink", dst)
		}
		return fmt.Errorf("copy exec file to %s: %w", dst, err)
	}
	out := os.NewFile(uintptr(fd), dst)
	defer out.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("copy exec file: stat %s: %w", dst, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("copy exec file: refusing destination %s: not a regular file", dst)
	}
	if st.Nlink > 1 {
		return fmt.Errorf("copy exec file: refusing destination %s: it has %d hard links", dst, st.Nlink)
	}
	if err := out.Chown(uid, gid); err != nil {
		return fmt.Errorf("copy exec file: chown %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy exec file to %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy exec file to %s: %w", dst, err)
	}
	return nil
}

// joinNetns enters the network namespace at path. setns acts on the
// calling thread, which is main's locked thread: the one that execs.
func joinNetns(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("join netns: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join netns %s: %w", path, err)
	}
	return nil
}

func (c *jailConfig) setRlimits() error {
	if c.fsize != nil {
		if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: *c.fsize, Max: *c.fsize}); err != nil {
			return fmt.Errorf("set fsize limit: %w", err)
		}
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: c.noFile, Max: c.noFile}); err != nil {
		return fmt.Errorf("set no-file limit: %w", err)
	}
	return nil
}

// startSidecar starts this binary again as the sidecar, in its own session
// so that signals aimed at firecracker's process group do not skip its
// cleanup. It returns firecracker's end of the channel. The sidecar is
// never waited for here: after the exec, firecracker is its parent.
func (c *jailConfig) startSidecar() (*os.File, error) {
	fcEnd, sideEnd, err := sidecarproto.Pair()
	if err != nil {
		return nil, fmt.Errorf("start sidecar: %w", err)
	}
	defer sideEnd.Close()
	exe, err := os.Executable()
	if err != nil {
		fcEnd.Close()
		return nil, fmt.Errorf("start sidecar: %w", err)
	}
	cmd := exec.Command(exe, sidecarArg, "--id", c.id, "--uid", strconv.Itoa(c.uid), "--gid", strconv.Itoa(c.gid))
	cmd.Stdout = os.Stdout // the console file the caller gave the VMM
	cmd.Stderr = os.Stderr
	cmd.Env = sidecarEnv
	cmd.ExtraFiles = []*os.File{sideEnd} // fd 3 in the sidecar
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fcEnd.Close()
		return nil, fmt.Errorf("start sidecar: %w", err)
	}
	return fcEnd, nil
}

// dropPrivileges switches every thread to uid/gid with no supplementary
// groups, as Rust's Command::uid/gid does for the real jailer.
func dropPrivileges(uid, gid int) error {
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	return nil
}

// exec replaces this process with firecracker, keeping the PID, with the
// sidecar channel as fd 3 and an empty environment (the jailer clears its
// own at start-up). The arguments are the jailer's: --id, the start times
// and the jailer's CPU time, each a separate word, then the caller's.
func (c *jailConfig) exec(fcEnd *os.File, startUs, parentCPUUs uint64) error {
	fd := int(fcEnd.Fd())
	if fd == sidecarproto.FD {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("clear close-on-exec on fd 3: %w", err)
		}
	} else if err := unix.Dup3(fd, sidecarproto.FD, 0); err != nil {
		return fmt.Errorf("move the sidecar channel to fd 3: %w", err)
	}
	path := "/" + c.execName
	argv := append([]string{
		path,
		"--id", c.id,
		"--start-time-us", strconv.FormatUint(startUs, 10),
		"--start-time-cpu-us", strconv.FormatUint(clockUs(unix.CLOCK_PROCESS_CPUTIME_ID), 10),
		"--parent-cpu-time-us", strconv.FormatUint(parentCPUUs, 10),
	}, c.fcArgs...)
	err := syscall.Exec(path, argv, []string{})
	return fmt.Errorf("exec %s: %w", path, err)
}
