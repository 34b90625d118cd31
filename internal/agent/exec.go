package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/agent/procio"
	"banger/internal/agent/reaper"
	"banger/internal/agentproto"
)

// defaultPath is the PATH every exec starts with.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// drainGrace bounds how long output is drained after the process exits: a
// background grandchild may hold the pipes open forever.
const drainGrace = time.Second

// stdinQueue bounds queued stdin chunks; beyond it the host is slowed down by
// the stream's flow control.
const stdinQueue = 16

// loginShell returns the shell for an empty argv: bash if present, else sh.
func loginShell() (path, argv0 string) {
	if st, err := os.Stat("/bin/bash"); err == nil && !st.IsDir() {
		return "/bin/bash", "-bash"
	}
	return "/bin/sh", "-sh"
}

// execSpec is a resolved exec request.
type execSpec struct {
	path string
	argv []string
	env  []string
	dir  string
}

func resolveExec(req *agentproto.Request) (*execSpec, error) {
	shell, argv0 := loginShell()
	argv := req.Argv
	if len(argv) == 0 {
		argv = []string{argv0}
	}
	env := []string{
		"PATH=" + defaultPath,
		"HOME=/root",
		"USER=root",
		"LOGNAME=root",
		"SHELL=" + shell,
	}
	if req.TTY {
		env = append(env, "TERM=xterm-256color")
	}
	env = append(env, req.Env...)

	dir := req.Cwd
	if dir == "" {
		dir = "/root"
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			dir = "/"
		}
	} else if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("chdir %q: %w", dir, unwrapPath(err))
	} else if !st.IsDir() {
		return nil, fmt.Errorf("chdir %q: not a directory", dir)
	}

	path := shell
	if len(req.Argv) > 0 {
		var err error
		path, err = lookPath(argv[0], envValue(env, "PATH"), dir)
		if err != nil {
			return nil, fmt.Errorf("exec %q: %w", argv[0], err)
		}
	}
	return &execSpec{path: path, argv: argv, env: env, dir: dir}, nil
}

// envValue returns the last value of key in env (the one exec will use).
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// unwrapPath turns *fs.PathError into its bare errno so messages read
// `exec "foo": no such file` without repeating the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var errNotFound = errors.New("no such file")

// lookPath resolves name the way execvp does, but against the PATH of the
// child's environment rather than the agent's.
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, checkExecutable(p)
	}
	var firstErr error
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !errors.Is(err, errNotFound) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", errNotFound
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errNotFound
		}
		return unwrapPath(err)
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	if st.Mode()&0o111 == 0 {
		return errors.New("permission denied")
	}
	return nil
}

// frameWriter serialises frames from the output pumps and the exit frame.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frameWriter) frame(typ byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return agentproto.WriteFrame(f.w, typ, p)
}

func (f *frameWriter) json(typ byte, v any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return agentproto.WriteJSONFrame(f.w, typ, v)
}

// proc is a running exec: its stdio ends on the agent side and how to signal it.
type proc struct {
	pid    int
	stdin  *os.File // pipe write end, or the pty master
	outs   []*os.File
	types  []byte
	ptmx   *os.File // nil without a TTY
	exited chan struct{}
}

func (p *proc) signal(sig unix.Signal) {
	if p.ptmx != nil {
		// With a TTY the shell's job control may run the foreground job in
		// its own group: signal that group too, like a terminal would.
		var pgrp int
		_ = control(p.ptmx, func(fd int) error {
			var err error
			pgrp, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
			return err
		})
		if pgrp > 0 {
			_ = unix.Kill(-pgrp, sig)
		}
	}
	_ = unix.Kill(-p.pid, sig)
}

// control runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode and stop Close from interrupting a pending Read.
func control(f *os.File, fn func(fd int) error) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func setWinsize(f *os.File, rows, cols uint16) error {
	return control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

// openPTY returns a pty pair whose master is in the runtime poller.
// pty.Open leaves the master in blocking mode (it uses Fd()), where a Read
// cannot be interrupted; a nonblocking duplicate can.
func openPTY() (master, tty *os.File, err error) {
	m, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
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

func (s *Server) exec(st net.Conn, r io.Reader, req *agentproto.Request) {
	spec, err := resolveExec(req)
	if err != nil {
		reply(st, err)
		return
	}
	p, status, err := s.startProc(spec, req)
	if err != nil {
		reply(st, err)
		return
	}
	reply(st, nil)

	fw := &frameWriter{w: st}
	var pumps sync.WaitGroup
	for i, f := range p.outs {
		pumps.Add(1)
		go func(f *os.File, typ byte) {
			defer pumps.Done()
			pump(f, typ, fw)
		}(f, p.types[i])
	}
	go s.readInput(r, p)

	ws := <-status
	close(p.exited)
	procio.Drain(&pumps, p.outs, drainGrace)
	code, sig := reaper.ExitCode(ws)
	_ = fw.json(agentproto.FrameExit, agentproto.Exit{Code: code, Signal: sig})
	_ = p.stdin.Close()
}

// pump copies one output of the process into frames until EOF. A pty master
// reports EIO once the last slave is closed; that is its EOF.
func pump(f *os.File, typ byte, fw *frameWriter) {
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if werr := fw.frame(typ, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *Server) startProc(spec *execSpec, req *agentproto.Request) (*proc, <-chan unix.WaitStatus, error) {
	cmd := &exec.Cmd{Path: spec.path, Args: spec.argv, Env: spec.env, Dir: spec.dir}
	p := &proc{exited: make(chan struct{})}
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			_ = f.Close()
		}
	}()
	if req.TTY {
		ptmx, tty, err := openPTY()
		if err != nil {
			return nil, nil, fmt.Errorf("open pty: %w", err)
		}
		childEnds = append(childEnds, tty)
		rows, cols := req.Rows, req.Cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		_ = setWinsize(ptmx, rows, cols)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		p.stdin, p.ptmx = ptmx, ptmx
		p.outs, p.types = []*os.File{ptmx}, []byte{agentproto.FrameStdout}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("create stdin pipe: %w", err)
		}
		childEnds = append(childEnds, inR)
		outR, outW, err := os.Pipe()
		if err != nil {
			_ = inW.Close()
			return nil, nil, fmt.Errorf("create stdout pipe: %w", err)
		}
		childEnds = append(childEnds, outW)
		errR, errW, err := os.Pipe()
		if err != nil {
			_ = inW.Close()
			_ = outR.Close()
			return nil, nil, fmt.Errorf("create stderr pipe: %w", err)
		}
		childEnds = append(childEnds, errW)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		p.stdin = inW
		p.outs = []*os.File{outR, errR}
		p.types = []byte{agentproto.FrameStdout, agentproto.FrameStderr}
	}
	status, err := s.Reaper.Start(cmd)
	if err != nil {
		_ = p.stdin.Close()
		for _, f := range p.outs {
			if f != p.stdin {
				_ = f.Close()
			}
		}
		return nil, nil, fmt.Errorf("exec %q: %w", spec.argv[0], unwrapPath(errors.Unwrap(err)))
	}
	p.pid = cmd.Process.Pid
	return p, status, nil
}

// readInput applies host frames to the process. If the host stream ends
// before the process has exited, the host is gone: kill the process group.
func (s *Server) readInput(r io.Reader, p *proc) {
	in := make(chan []byte, stdinQueue)
	go func() {
		// A separate writer so that a process not reading its stdin cannot
		// block signal and resize frames.
		for b := range in {
			if b == nil {
				if p.ptmx != nil {
					_, _ = p.ptmx.Write([]byte{4}) // VEOF: ^D at line start
				} else {
					_ = p.stdin.Close()
				}
				continue
			}
			_, _ = p.stdin.Write(b)
		}
	}()
	defer close(in)
	eof := false
	for {
		typ, payload, err := agentproto.ReadFrame(r)
		if err != nil {
			select {
			case <-p.exited:
			default:
				p.signal(unix.SIGKILL)
			}
			return
		}
		switch typ {
		case agentproto.FrameStdin:
			if !eof && len(payload) > 0 {
				in <- payload
			}
		case agentproto.FrameStdinEOF:
			if !eof {
				eof = true
				in <- nil
			}
		case agentproto.FrameResize:
			var rs agentproto.Resize
			if json.Unmarshal(payload, &rs) == nil && p.ptmx != nil && rs.Rows > 0 && rs.Cols > 0 {
				_ = setWinsize(p.ptmx, rs.Rows, rs.Cols)
			}
		case agentproto.FrameSignal:
			var sg agentproto.Signal
			if json.Unmarshal(payload, &sg) == nil && sg.Signal > 0 && sg.Signal < 65 {
				select {
				case <-p.exited:
				default:
					p.signal(unix.Signal(sg.Signal))
				}
			}
		}
	}
}
