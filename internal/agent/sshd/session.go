package sshd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/agent/procio"
)

const (
	// defaultPath is the PATH every child starts with.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// homeDir is the single user's home: the sandbox user is root.
	homeDir = "/root"
	// drainGrace bounds how long output is drained after the process
	// exits: a background grandchild may hold the pipes open forever.
	drainGrace = time.Second
	// hangupGrace is how long a process gets between SIGHUP (its channel
	// went away) and SIGKILL.
	hangupGrace = 2 * time.Second
)

// defaultShell is bash if present, else sh.
func defaultShell() string {
	if st, err := os.Stat("/bin/bash"); err == nil && !st.IsDir() {
		return "/bin/bash"
	}
	return "/bin/sh"
}

// session is one "session" channel: at most one program (shell, exec or
// subsystem) with its pty, environment and exit status.
type session struct {
	srv  *Server
	conn *ssh.ServerConn
	ch   ssh.Channel

	env        []string // accepted "env" requests, in order
	term       string
	ptmx, tty  *os.File // set by pty-req
	started    bool
	proc       *proc
	background sync.WaitGroup // the program's goroutines
}

// proc is a running child.
type proc struct {
	pid    int
	stdin  *os.File   // pipe write end, or the pty master
	outs   []*os.File // stdout/stderr read ends, or the pty master
	exited chan struct{}
}

func (s *Server) session(conn *ssh.ServerConn, nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		s.cfg.Logf("sshd: accept session: %v", err)
		return
	}
	ss := &session{srv: s, conn: conn, ch: ch}
	for r := range reqs {
		ok, then := ss.handle(r)
		if r.WantReply {
			_ = r.Reply(ok, nil)
		}
		if then != nil {
			then()
		}
	}
	// The channel is gone: stop a program that is still running.
	ss.hangup()
	ss.background.Wait()
	_ = ch.Close()
	if ss.tty != nil {
		_ = ss.tty.Close()
	}
	if ss.ptmx != nil {
		_ = ss.ptmx.Close()
	}
}

// handle applies one channel request. then, if set, runs after the reply so
// that the reply precedes any output of a started program.
func (ss *session) handle(r *ssh.Request) (ok bool, then func()) {
	switch r.Type {
	case "pty-req":
		return ss.ptyReq(r.Payload), nil
	case "window-change":
		var m struct{ Cols, Rows, Width, Height uint32 }
		if ss.ptmx == nil || ssh.Unmarshal(r.Payload, &m) != nil {
			return false, nil
		}
		return setWinsize(ss.ptmx, m.Rows, m.Cols) == nil, nil
	case "env":
		var m struct{ Name, Value string }
		if ssh.Unmarshal(r.Payload, &m) != nil {
			return false, nil
		}
		if !acceptEnv(m.Name, m.Value) {
			return false, nil
		}
		ss.env = append(ss.env, m.Name+"="+m.Value)
		return true, nil
	case "shell":
		return ss.startProgram(nil)
	case "exec":
		var m struct{ Command string }
		if ssh.Unmarshal(r.Payload, &m) != nil {
			return false, nil
		}
		return ss.startProgram(&m.Command)
	case "subsystem":
		var m struct{ Name string }
		if ssh.Unmarshal(r.Payload, &m) != nil || m.Name != "sftp" || ss.started {
			return false, nil
		}
		ss.started = true
		return true, ss.serveSFTP
	case "signal":
		var m struct{ Name string }
		if ssh.Unmarshal(r.Payload, &m) != nil {
			return false, nil
		}
		return ss.signal(m.Name), nil
	default:
		// x11-req, auth-agent-req@openssh.com, break, ...: unsupported.
		return false, nil
	}
}

func (ss *session) ptyReq(payload []byte) bool {
	var m struct {
		Term                      string
		Cols, Rows, Width, Height uint32
		Modes                     string
	}
	if ss.started || ss.ptmx != nil || ssh.Unmarshal(payload, &m) != nil {
		return false
	}
	master, tty, err := openPTY()
	if err != nil {
		ss.srv.cfg.Logf("sshd: open pty: %v", err)
		return false
	}
	if m.Rows == 0 || m.Cols == 0 {
		m.Rows, m.Cols = 24, 80
	}
	_ = setWinsize(master, m.Rows, m.Cols)
	ss.ptmx, ss.tty, ss.term = master, tty, m.Term
	return true
}

// acceptEnv reports whether a client "env" request is honoured. The client
// already runs arbitrary commands as root, so this is hygiene, not a
// boundary: the dynamic-linker variables (LD_*) are dropped so that a
// forwarded environment cannot break the shell, and the identity and SSH_*
// variables the server sets itself cannot be overridden.
func acceptEnv(name, value string) bool {
	if name == "" || strings.ContainsAny(name, "=\x00") || strings.ContainsRune(value, 0) {
		return false
	}
	if strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "SSH_") {
		return false
	}
	switch name {
	case "HOME", "USER", "LOGNAME", "SHELL", "MAIL":
		return false
	}
	return true
}

// environ builds a child's environment: base, Config.Env, client env, then
// what the server sets about the connection.
func (ss *session) environ() []string {
	cfg := ss.srv.cfg
	env := []string{
		"PATH=" + defaultPath,
		"HOME=" + ss.srv.home,
		"USER=root",
		"LOGNAME=root",
		"SHELL=" + cfg.Shell,
	}
	env = append(env, cfg.Env...)
	env = append(env, ss.env...)
	if ss.ptmx != nil {
		term := ss.term
		if term == "" {
			term = "vt100"
		}
		env = append(env, "TERM="+term, "SSH_TTY="+ss.tty.Name())
	}
	rh, rp := hostPort(ss.conn.RemoteAddr())
	lh, lp := hostPort(ss.conn.LocalAddr())
	env = append(env,
		"SSH_CLIENT="+rh+" "+rp+" "+lp,
		"SSH_CONNECTION="+rh+" "+rp+" "+lh+" "+lp,
	)
	return env
}

func hostPort(a net.Addr) (host, port string) {
	if a == nil {
		return "unknown", "0"
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), "0"
	}
	return h, p
}

// workDir is the home directory if it exists and can be entered, else /.
func (ss *session) workDir() string { return workDirFor(ss.srv.home) }

func workDirFor(home string) string {
	if st, err := os.Stat(home); err == nil && st.IsDir() && unix.Access(home, unix.X_OK) == nil {
		return home
	}
	return "/"
}

// startProgram starts a login shell (command nil) or `Shell -c command`, as
// OpenSSH does, so scp, rsync and editor remotes find the usual shell.
func (ss *session) startProgram(command *string) (bool, func()) {
	if ss.started {
		return false, nil
	}
	ss.started = true
	shell := ss.srv.cfg.Shell
	argv := []string{"-" + filepath.Base(shell)}
	if command != nil {
		argv = []string{filepath.Base(shell), "-c", *command}
	}
	cmd := &exec.Cmd{Path: shell, Args: argv, Env: ss.environ(), Dir: ss.workDir()}
	p, wait, err := ss.start(cmd)
	if err != nil {
		ss.srv.cfg.Logf("sshd: %v", err)
		return false, nil
	}
	ss.proc = p
	ss.background.Add(1)
	return true, func() {
		go func() {
			defer ss.background.Done()
			ss.run(p, wait)
		}()
	}
}

// start wires the child's stdio to *os.File ends (a pty, or three pipes) and
// starts it through the Starter.
func (ss *session) start(cmd *exec.Cmd) (*proc, WaitFunc, error) {
	p := &proc{exited: make(chan struct{})}
	var childEnds, ours []*os.File
	defer func() {
		for _, f := range childEnds {
			_ = f.Close()
		}
	}()
	fail := func(err error) (*proc, WaitFunc, error) {
		for _, f := range ours {
			_ = f.Close()
		}
		return nil, nil, err
	}
	if ss.ptmx != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = ss.tty, ss.tty, ss.tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		// The session keeps the pty; the program's end is closed once it
		// has started so that the master sees EOF when the program's side
		// goes away.
		childEnds = append(childEnds, ss.tty)
		ss.tty = nil
		p.stdin, p.outs = ss.ptmx, []*os.File{ss.ptmx}
	} else {
		var pipes [3][2]*os.File
		for i := range pipes {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(fmt.Errorf("create pipe: %w", err))
			}
			pipes[i] = [2]*os.File{r, w}
			if i == 0 {
				childEnds, ours = append(childEnds, r), append(ours, w)
			} else {
				childEnds, ours = append(childEnds, w), append(ours, r)
			}
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes[0][0], pipes[1][1], pipes[2][1]
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		p.stdin, p.outs = pipes[0][1], []*os.File{pipes[1][0], pipes[2][0]}
	}
	wait, err := ss.srv.cfg.Starter.Start(cmd)
	if err != nil {
		return fail(fmt.Errorf("start %s: %w", cmd.Path, err))
	}
	p.pid = cmd.Process.Pid
	return p, wait, nil
}

// run copies the program's I/O until it exits, then reports its status and
// closes the channel.
func (ss *session) run(p *proc, wait WaitFunc) {
	ch := ss.ch
	var pumps sync.WaitGroup
	for i, f := range p.outs {
		var w io.Writer = ch
		if i == 1 {
			w = ch.Stderr()
		}
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			pump(w, f)
		}()
	}
	ss.background.Add(1)
	go func() {
		defer ss.background.Done()
		_, _ = io.Copy(p.stdin, ch)
		// Client EOF closes the program's stdin. With a pty there is no
		// stdin of its own to close: the terminal stays until exit.
		if len(p.outs) > 1 {
			_ = p.stdin.Close()
		}
	}()

	code, sig, err := wait()
	close(p.exited)
	if err != nil {
		ss.srv.cfg.Logf("sshd: %v", err)
	}
	if code < 0 || code > 255 {
		code = 255
	}
	procio.Drain(&pumps, p.outs, drainGrace)
	_ = p.stdin.Close()

	_ = ch.CloseWrite()
	if sig != 0 {
		name := strings.TrimPrefix(unix.SignalName(syscall.Signal(sig)), "SIG")
		if name == "" {
			name = strconv.Itoa(sig)
		}
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
		}{Signal: name}))
	} else {
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	}
	_ = ch.Close()
}

// pump copies one output of the program to the channel until EOF. A pty
// master reports EIO once the last slave is closed; that is its EOF.
func pump(w io.Writer, f *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// signal delivers a client "signal" request to the program, as OpenSSH
// does: to the process itself, not its group.
func (ss *session) signal(name string) bool {
	p := ss.proc
	if p == nil {
		return false
	}
	num := unix.SignalNum("SIG" + name)
	if num == 0 {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
	}
	return unix.Kill(p.pid, num) == nil
}

// hangup stops a program whose channel closed before it exited: SIGHUP to
// its process group, then SIGKILL after hangupGrace.
func (ss *session) hangup() {
	p := ss.proc
	if p == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = unix.Kill(-p.pid, unix.SIGHUP)
	_ = unix.Kill(-p.pid, unix.SIGCONT)
	select {
	case <-p.exited:
	case <-time.After(hangupGrace):
		_ = unix.Kill(-p.pid, unix.SIGKILL)
	}
}

// serveSFTP runs the sftp subsystem in process over the channel.
func (ss *session) serveSFTP() {
	ss.background.Add(1)
	go func() {
		defer ss.background.Done()
		code := uint32(0)
		// The sftp server closes its stream when done; the channel must
		// stay open until the exit status is sent.
		rw := struct {
			io.Reader
			io.Writer
			io.Closer
		}{ss.ch, ss.ch, io.NopCloser(nil)}
		srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(ss.workDir()))
		if err == nil {
			err = srv.Serve()
			_ = srv.Close()
		}
		if err != nil && !errors.Is(err, io.EOF) {
			ss.srv.cfg.Logf("sshd: sftp: %v", err)
			code = 1
		}
		_ = ss.ch.CloseWrite()
		_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{code}))
		_ = ss.ch.Close()
	}()
}

func setWinsize(f *os.File, rows, cols uint32) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("set window size: %w", err)
	}
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{
			Row: uint16(min(rows, 0xffff)),
			Col: uint16(min(cols, 0xffff)),
		})
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return fmt.Errorf("set window size: %w", err)
	}
	return nil
}

// openPTY returns a pty pair whose master is in the runtime poller.
// pty.Open leaves the master in blocking mode (it calls Fd()), where a
// blocked Read cannot be interrupted by Close; a nonblocking duplicate can.
func openPTY() (master, tty *os.File, err error) {
	m, tty, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	defer m.Close()
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		_ = tty.Close()
		return nil, nil, fmt.Errorf("duplicate pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		_ = tty.Close()
		return nil, nil, fmt.Errorf("set pty master nonblocking: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), tty, nil
}
