// Package sysrun is `banger system run`: a foreground supervisor for hosts
// without systemd (containers, CI). Running as root, it writes the install
// metadata, starts banger-helper as root and bangerd dropped to the owner
// (both found next to the running executable), waits until each answers,
// and stops them in order (bangerd, then the helper) on SIGINT/SIGTERM.
// A child that exits on its own is logged and started again, with a
// backoff that grows while it keeps crashing; the other keeps running
// (bangerd only restarts once the helper answers). VMs outlive both:
// bangerd leaves them running when stopped and adopts them on its next
// start, and the helper is dialled afresh for each op.
//
// Both children log to the supervisor's stderr, one line at a time, with a
// "helper: " or "bangerd: " prefix.
package sysrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/api/client"
	"banger/internal/errdefs"
	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/trustpath"
)

// Defaults of the helper's paths; they match internal/helper's (a test
// checks), which this package does not import so the CLI stays free of it.
const (
	DefaultHelperSocket   = "/run/banger-root/helper.sock"
	DefaultHelperStateDir = "/var/lib/banger-root"
	DefaultReadyTimeout   = 15 * time.Second
	DefaultStopTimeout    = 10 * time.Second
)

// Binary names looked up in BinDir.
const (
	HelperBin  = "banger-helper"
	BangerdBin = "bangerd"
)

// maxSocketPath is the longest unix socket path (sun_path is 108 bytes,
// NUL included).
const maxSocketPath = 107

// Options configures Run.
type Options struct {
	Owner          string // user name (or uid) bangerd runs as; required
	HelperSocket   string // default DefaultHelperSocket
	HelperStateDir string // default DefaultHelperStateDir
	InstallMeta    string // default installmeta.DefaultPath
	Netns          string // run the helper's network ops in this namespace ("" = host)
	JailBase       string // the helper's Firecracker jail base ("" = its default)
	// Pins are the Firecracker binaries, VMM uids and bridge subnet root
	// pins for the helper (install metadata); the subnet is checked
	// against the addresses and routes of Netns (or the host).
	Pins Pins
	// BinDir holds banger-helper and bangerd; default: the directory of
	// the running executable.
	BinDir string
	// Out receives the one "up" line; Log receives the children's output
	// and the supervisor's own messages. Default os.Stdout and os.Stderr.
	Out, Log io.Writer
	// ReadyTimeout bounds the wait for each child to answer; StopTimeout
	// bounds the wait for each to exit after SIGTERM (then it is killed).
	ReadyTimeout, StopTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.HelperSocket == "" {
		o.HelperSocket = DefaultHelperSocket
	}
	if o.HelperStateDir == "" {
		o.HelperStateDir = DefaultHelperStateDir
	}
	if o.InstallMeta == "" {
		o.InstallMeta = installmeta.DefaultPath
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
}

// Validate checks the options without touching the system (defaults
// applied first). Errors are errdefs.ErrInvalid.
func (o Options) Validate() error {
	o.setDefaults()
	if !validName(o.Owner) {
		return errdefs.Invalid("--owner %q: want a user name", o.Owner)
	}
	for _, p := range []struct{ flag, val string }{
		{"--helper-socket", o.HelperSocket}, {"--state-dir", o.HelperStateDir},
		{"--install-meta", o.InstallMeta}, {"--netns", o.Netns}, {"bin dir", o.BinDir}, {"--jail-base", o.JailBase},
	} {
		if p.val == "" && (p.flag == "--netns" || p.flag == "bin dir" || p.flag == "--jail-base") {
			continue
		}
		if !filepath.IsAbs(p.val) || filepath.Clean(p.val) != p.val {
			return errdefs.Invalid("%s %q: want a clean absolute path", p.flag, p.val)
		}
	}
	if len(o.HelperSocket) > maxSocketPath {
		return errdefs.Invalid("--helper-socket %q: longer than %d bytes, too long for a unix socket", o.HelperSocket, maxSocketPath)
	}
	if o.HelperSocket == "/" || filepath.Dir(o.HelperSocket) == "/" {
		return errdefs.Invalid("--helper-socket %q: want a socket inside a directory of its own", o.HelperSocket)
	}
	return nil
}

// checkRoot refuses a non-root effective uid.
func checkRoot(euid int) error {
	if euid != 0 {
		return errdefs.Invalid("banger system run must run as root (euid %d): it starts the root helper and drops bangerd to the owner; use sudo", euid)
	}
	return nil
}

// Run supervises the helper and bangerd until ctx is done (nil: both were
// stopped in order), restarting either when it exits. Only a failure to
// start them the first time ends it early (an error naming the child).
func Run(ctx context.Context, o Options) error {
	o.setDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	if err := checkRoot(os.Geteuid()); err != nil {
		return err
	}
	owner, err := LookupOwner(o.Owner)
	if err != nil {
		return err
	}
	if err := checkHome(owner); err != nil {
		return err
	}
	if o.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
		o.BinDir = filepath.Dir(exe)
	}
	helperBin, bangerdBin := filepath.Join(o.BinDir, HelperBin), filepath.Join(o.BinDir, BangerdBin)
	for _, b := range []string{helperBin, bangerdBin} {
		if fi, err := os.Stat(b); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return errdefs.Invalid("%s: not an executable file next to banger (install all banger binaries together)", b)
		}
	}
	// The helper runs as root: it must be a binary only root could have
	// put there, as the ones it runs itself are.
	if err := trustpath.Binary(helperBin, 0); err != nil {
		return errdefs.Invalid("%v: root runs only binaries no other user can replace; install root-owned copies with 'sudo make install' (into %s) and run %s system run", err, DefaultInstallBinDir, filepath.Join(DefaultInstallBinDir, "banger"))
	}
	if err := o.Pins.Check(SystemAccounts); err != nil {
		return err
	}
	if err := o.Pins.CheckSubnetFree(ctx, hostPrefixesIn(o.Netns), o.HelperStateDir); err != nil {
		return err
	}

	env := OwnerEnv(owner, os.Getenv("PATH"), RuntimeDirFor(owner.UID), o.HelperSocket)
	layout := paths.ForUser(owner.Home, int(owner.UID), env)
	daemon := client.New(layout.SocketPath, "", "")
	daemon.PeerUID = int(owner.UID)
	if _, err := daemon.Ping(ctx); err == nil {
		return errdefs.Conflict("a bangerd for %s already answers on %s: stop it before starting a supervised one", owner.User, layout.SocketPath)
	}
	if dialable(ctx, o.HelperSocket) {
		return errdefs.Conflict("a banger-helper already serves %s: stop it first", o.HelperSocket)
	}

	if err := installmeta.Write(o.InstallMeta, o.Pins.apply(Metadata(owner, time.Now()))); err != nil {
		return err
	}

	logw := &lineWriter{w: o.Log}
	s := &supervisor{log: logw, stopTimeout: o.StopTimeout, backoff: defaultBackoff}
	// On every early return; a no-op once stopped. The error that made us
	// return is the one worth reporting.
	defer func() { _ = s.stopAll() }()

	helperArgs := []string{"--socket", o.HelperSocket, "--install-meta", o.InstallMeta, "--state-dir", o.HelperStateDir}
	if o.Netns != "" {
		helperArgs = append(helperArgs, "--netns", o.Netns)
	}
	if o.JailBase != "" {
		helperArgs = append(helperArgs, "--jail-base", o.JailBase)
	}
	helperSpec := childSpec{
		name: "helper",
		cmd: func() *exec.Cmd {
			cmd := exec.Command(helperBin, helperArgs...) // our own binary, argv only
			cmd.Env = os.Environ()
			cmd.Dir = "/"
			// A process group of its own: a terminal's ^C reaches only
			// the supervisor, which then stops the children in order.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
			return cmd
		},
		ready: func(ctx context.Context) error {
			if dialable(ctx, o.HelperSocket) {
				return nil
			}
			return fmt.Errorf("socket %s does not accept connections", o.HelperSocket)
		},
	}
	helperSlot, err := s.startChild(ctx, helperSpec, o.ReadyTimeout)
	if err != nil {
		return err
	}
	daemonSpec := childSpec{
		name: "bangerd",
		cmd: func() *exec.Cmd {
			cmd := exec.Command(bangerdBin) // our own binary, argv only
			cmd.Env = append(EnvList(env), api.SupervisorEnv+"="+api.SupervisorSystemRun)
			cmd.Dir = "/"
			// A session of its own, as the VMMs it starts have theirs:
			// they outlive it, and its next run adopts them.
			cmd.SysProcAttr = &syscall.SysProcAttr{
				Setsid:     true,
				Pdeathsig:  syscall.SIGTERM,
				Credential: &syscall.Credential{Uid: owner.UID, Gid: owner.GID, Groups: owner.Groups},
			}
			return cmd
		},
		ready: func(ctx context.Context) error {
			_, err := daemon.Ping(ctx)
			return err
		},
		after: helperSlot,
	}
	daemonSlot, err := s.startChild(ctx, daemonSpec, o.ReadyTimeout)
	if err != nil {
		return err
	}

	fmt.Fprintf(o.Out, "banger system: up: banger-helper (pid %d, %s) and bangerd (pid %d, %s) for owner %s (uid %d); as the owner run: %s vm run\n",
		helperSlot.p.pid(), o.HelperSocket, daemonSlot.p.pid(), layout.SocketPath, owner.User, owner.UID, cliHint(owner, env))

	return s.supervise(ctx, []*slot{helperSlot, daemonSlot}, o.ReadyTimeout)
}

// cliHint is how the owner reaches this bangerd from a root shell.
func cliHint(o Owner, env map[string]string) string {
	bin := "banger"
	if exe, err := os.Executable(); err == nil {
		if onPath, err := exec.LookPath("banger"); err != nil || !sameFile(onPath, exe) {
			bin = exe
		}
	}
	if rd := env["XDG_RUNTIME_DIR"]; rd != "" {
		return fmt.Sprintf("sudo -u %s env XDG_RUNTIME_DIR=%s %s", o.User, rd, bin)
	}
	return fmt.Sprintf("sudo -u %s %s", o.User, bin)
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// dialable reports whether a unix socket at path accepts a connection.
func dialable(ctx context.Context, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// exitDesc describes a child's Wait error.
func exitDesc(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// proc is one started child.
type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{} // closed when Wait returned
	err    error         // Wait's result, valid once done is closed
	copied chan struct{} // closed when its output reached EOF
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// supervisor owns the started children, in start order.
type supervisor struct {
	log         *lineWriter
	stopTimeout time.Duration
	backoff     backoff
	procs       []*proc // in start order; a restarted child keeps its place
}

func (s *supervisor) logf(format string, a ...any) {
	s.log.line("banger system: ", fmt.Sprintf(format, a...))
}

// start starts cmd with its stdout and stderr on a pipe whose lines go to
// the log with a "name: " prefix. The pipe is an *os.File, so Wait does not
// wait for grandchildren that inherited it.
func (s *supervisor) start(name string, cmd *exec.Cmd) (*proc, error) {
	p, err := s.spawn(name, cmd)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, p)
	return p, nil
}

// startAt starts cmd in place of the child at procs[i] (which exited).
func (s *supervisor) startAt(i int, name string, cmd *exec.Cmd) (*proc, error) {
	p, err := s.spawn(name, cmd)
	if err != nil {
		return nil, err
	}
	s.procs[i] = p
	return p, nil
}

func (s *supervisor) spawn(name string, cmd *exec.Cmd) (*proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), copied: make(chan struct{})}
	go func() {
		s.log.copyLines(name+": ", r)
		close(p.copied)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls ready until it succeeds, p dies, ctx ends or timeout
// passes.
func (s *supervisor) waitReady(ctx context.Context, p *proc, timeout time.Duration, ready func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not ready within %s: %w", p.name, timeout, err)
		}
		select {
		case <-p.done:
			if p.name == "bangerd" && exitCode(p.err) == 3 {
				return errdefs.Conflict("bangerd exited: another bangerd already holds the owner's lock")
			}
			return fmt.Errorf("%s exited before it was ready: %s (its output is above)", p.name, exitDesc(p.err))
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for %s", p.name)
		case <-tick.C:
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// stopAll stops the children in reverse start order (bangerd before the
// helper it uses). It is idempotent.
func (s *supervisor) stopAll() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		if err := s.stop(p); err != nil {
			errs = append(errs, err)
		}
		// Let its last lines through, unless a grandchild (a VMM
		// bangerd left running) still holds the pipe.
		select {
		case <-p.copied:
		case <-time.After(time.Second):
		}
	}
	s.procs = nil
	return errors.Join(errs...)
}

// stop sends SIGTERM and waits up to stopTimeout, then kills. Being killed
// is an error; a clean or signalled exit after SIGTERM is not.
func (s *supervisor) stop(p *proc) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	t := time.NewTimer(s.stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("stop %s: it did not exit within %s of SIGTERM and was killed", p.name, s.stopTimeout)
}

// lineWriter serialises whole prefixed lines from several children onto
// one writer.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) line(prefix, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, prefix+strings.TrimRight(s, "\n")+"\n")
}

// copyLines copies r to the log line by line until EOF.
func (l *lineWriter) copyLines(prefix string, r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			l.line(prefix, s)
		}
		if err != nil {
			return
		}
	}
}
