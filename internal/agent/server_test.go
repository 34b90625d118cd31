package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent/reaper"
	"banger/internal/agentproto"
)

// host is the test's stand-in for bangerd: a handshaken yamux client over an
// in-memory pipe to a real Server.
type host struct {
	t    *testing.T
	sess *yamux.Session
}

func newHost(t *testing.T, srv *Server) *host {
	t.Helper()
	hostEnd, guestEnd := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(guestEnd) }()
	// Stale bytes from an "earlier connection" must be skipped.
	go func() { _, _ = hostEnd.Write([]byte("garbage from before\n")) }()
	_ = hostEnd.SetDeadline(time.Now().Add(5 * time.Second))
	time.Sleep(10 * time.Millisecond)
	if err := agentproto.HostHandshake(hostEnd, agentproto.NewNonce(), 200*time.Millisecond); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	_ = hostEnd.SetDeadline(time.Time{})
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(hostEnd, cfg)
	if err != nil {
		t.Fatalf("yamux client: %v", err)
	}
	t.Cleanup(func() {
		_ = sess.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Error("server did not end after the host closed the session")
		}
	})
	return &host{t: t, sess: sess}
}

func testServer() *Server {
	return &Server{Mode: ModeService, Version: "test", Reaper: reaper.Default()}
}

// call opens a stream, sends req and reads the first reply.
func (h *host) call(req agentproto.Request) (net.Conn, *bufio.Reader, agentproto.Reply) {
	h.t.Helper()
	st, err := h.sess.Open()
	if err != nil {
		h.t.Fatalf("open stream: %v", err)
	}
	_ = st.SetDeadline(time.Now().Add(20 * time.Second))
	if err := agentproto.WriteJSONLine(st, req); err != nil {
		h.t.Fatalf("send request: %v", err)
	}
	br := bufio.NewReader(st)
	var rep agentproto.Reply
	if err := agentproto.ReadJSONLine(br, &rep); err != nil {
		h.t.Fatalf("read reply: %v", err)
	}
	return st, br, rep
}

type execResult struct {
	stdout, stderr string
	exit           agentproto.Exit
}

// exec runs req, feeding stdin (then EOF) and each of the extra frames.
func (h *host) exec(req agentproto.Request, stdin string, before func(st net.Conn, out *bytes.Buffer, br *bufio.Reader)) execResult {
	h.t.Helper()
	req.Op = agentproto.OpExec
	st, br, rep := h.call(req)
	defer st.Close()
	if !rep.OK {
		h.t.Fatalf("exec %q: %s", req.Argv, rep.Error)
	}
	var res execResult
	var out, errb bytes.Buffer
	if before != nil {
		before(st, &out, br)
	}
	if stdin != "" {
		_ = agentproto.WriteFrame(st, agentproto.FrameStdin, []byte(stdin))
	}
	if !req.TTY {
		_ = agentproto.WriteFrame(st, agentproto.FrameStdinEOF, nil)
	}
	for {
		typ, payload, err := agentproto.ReadFrame(br)
		if err != nil {
			h.t.Fatalf("exec %q: read frame: %v (stdout so far %q)", req.Argv, err, out.String())
		}
		switch typ {
		case agentproto.FrameStdout:
			out.Write(payload)
		case agentproto.FrameStderr:
			errb.Write(payload)
		case agentproto.FrameExit:
			if err := json.Unmarshal(payload, &res.exit); err != nil {
				h.t.Fatalf("decode exit: %v", err)
			}
			res.stdout, res.stderr = out.String(), errb.String()
			return res
		}
	}
}

func TestPing(t *testing.T) {
	h := newHost(t, testServer())
	st, _, rep := h.call(agentproto.Request{Op: agentproto.OpPing})
	st.Close()
	host, _ := os.Hostname()
	if !rep.OK || rep.Version != agentproto.Version || rep.Agent != "test" || rep.Mode != ModeService || rep.Hostname != host || rep.Kernel == "" {
		t.Fatalf("ping reply = %+v", rep)
	}
}

func TestUnknownOp(t *testing.T) {
	h := newHost(t, testServer())
	st, _, rep := h.call(agentproto.Request{Op: "nope"})
	st.Close()
	if rep.OK || !strings.Contains(rep.Error, "unknown op") {
		t.Fatalf("reply = %+v", rep)
	}
}

func TestExec(t *testing.T) {
	h := newHost(t, testServer())
	dir := t.TempDir()
	cases := []struct {
		name           string
		req            agentproto.Request
		stdin          string
		stdout, stderr string
		code, signal   int
	}{
		{name: "separate streams and exit 7",
			req:    agentproto.Request{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 7"}},
			stdout: "out\n", stderr: "err\n", code: 7},
		{name: "exit 0", req: agentproto.Request{Argv: []string{"true"}}},
		{name: "signal death",
			req:  agentproto.Request{Argv: []string{"sh", "-c", "kill -TERM $$"}},
			code: 128 + 15, signal: 15},
		{name: "stdin", req: agentproto.Request{Argv: []string{"cat"}}, stdin: "hello\nworld\n", stdout: "hello\nworld\n"},
		{name: "env appended and overriding",
			req:    agentproto.Request{Argv: []string{"sh", "-c", `echo "$FOO $HOME $USER $TERM"`}, Env: []string{"FOO=bar", "HOME=/nowhere"}},
			stdout: "bar /nowhere root \n"},
		{name: "cwd", req: agentproto.Request{Argv: []string{"pwd"}, Cwd: dir}, stdout: dir + "\n"},
		{name: "absolute path", req: agentproto.Request{Argv: []string{"/bin/sh", "-c", "echo $0"}}, stdout: "/bin/sh\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			res := h.exec(c.req, c.stdin, nil)
			if res.stdout != c.stdout || res.stderr != c.stderr || res.exit.Code != c.code || res.exit.Signal != c.signal {
				t.Fatalf("got stdout %q stderr %q exit %+v; want %q %q code %d signal %d",
					res.stdout, res.stderr, res.exit, c.stdout, c.stderr, c.code, c.signal)
			}
		})
	}
}

func TestExecErrors(t *testing.T) {
	h := newHost(t, testServer())
	cases := []struct {
		req  agentproto.Request
		want string
	}{
		{agentproto.Request{Op: agentproto.OpExec, Argv: []string{"banger-no-such-binary"}}, `exec "banger-no-such-binary": no such file`},
		{agentproto.Request{Op: agentproto.OpExec, Argv: []string{"/nonexistent/x"}}, `exec "/nonexistent/x": no such file`},
		{agentproto.Request{Op: agentproto.OpExec, Argv: []string{"true"}, Cwd: "/nonexistent"}, `chdir "/nonexistent": no such file or directory`},
	}
	for _, c := range cases {
		st, _, rep := h.call(c.req)
		st.Close()
		if rep.OK || rep.Error != c.want {
			t.Errorf("exec %q: reply %+v, want error %q", c.req.Argv, rep, c.want)
		}
	}
}

func TestExecSignalFrame(t *testing.T) {
	h := newHost(t, testServer())
	var child int
	// The shell prints its background child's pid; the signal must reach
	// the whole process group, not only the shell.
	res := h.exec(agentproto.Request{Argv: []string{"sh", "-c", "sleep 30 & echo $!; wait"}}, "", func(st net.Conn, out *bytes.Buffer, br *bufio.Reader) {
		typ, payload, err := agentproto.ReadFrame(br)
		if err != nil || typ != agentproto.FrameStdout {
			t.Fatalf("first frame: %d %q %v", typ, payload, err)
		}
		if _, err := fmtSscan(strings.TrimSpace(string(payload)), &child); err != nil {
			t.Fatalf("child pid %q: %v", payload, err)
		}
		_ = agentproto.WriteJSONFrame(st, agentproto.FrameSignal, agentproto.Signal{Signal: int(syscall.SIGTERM)})
	})
	if res.exit.Signal != int(syscall.SIGTERM) || res.exit.Code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit = %+v, want SIGTERM death", res.exit)
	}
	waitGone(t, child)
}

// waitGone waits for pid to die. An orphaned grandchild is reaped by
// whatever init the test runs under, so a zombie counts as gone.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecBackgroundGrandchildDoesNotHang(t *testing.T) {
	h := newHost(t, testServer())
	start := time.Now()
	res := h.exec(agentproto.Request{Argv: []string{"sh", "-c", "sleep 30 & echo bye"}}, "", nil)
	if res.stdout != "bye\n" || res.exit.Code != 0 {
		t.Fatalf("got %+v", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("exec took %s: output drain did not give up", d)
	}
}

func TestExecHostCloseKills(t *testing.T) {
	h := newHost(t, testServer())
	marker := filepath.Join(t.TempDir(), "pid")
	st, br, rep := h.call(agentproto.Request{Op: agentproto.OpExec, Argv: []string{"sh", "-c", "echo $$ > " + marker + "; echo go; exec sleep 30"}})
	if !rep.OK {
		t.Fatal(rep.Error)
	}
	if _, _, err := agentproto.ReadFrame(br); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmtSscan(strings.TrimSpace(string(b)), &pid); err != nil {
		t.Fatal(err)
	}
	st.Close()
	waitGone(t, pid)
}

func TestExecTTY(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("no /dev/ptmx")
	}
	h := newHost(t, testServer())
	res := h.exec(agentproto.Request{Argv: []string{"tty"}, TTY: true, Rows: 30, Cols: 100}, "", nil)
	if !regexp.MustCompile(`^/dev/pts/\d+\r\n$`).MatchString(res.stdout) || res.exit.Code != 0 {
		t.Fatalf("tty: %+v", res)
	}
	res = h.exec(agentproto.Request{Argv: []string{"sh", "-c", `echo "$TERM"; stty size`}, TTY: true, Rows: 30, Cols: 100}, "", nil)
	if res.stdout != "xterm-256color\r\n30 100\r\n" {
		t.Fatalf("initial size: %q", res.stdout)
	}
	// Resize while running: the shell reads a line, then reports the size.
	res = h.exec(agentproto.Request{Argv: []string{"sh", "-c", "read x; stty size"}, TTY: true, Rows: 30, Cols: 100}, "", func(st net.Conn, _ *bytes.Buffer, _ *bufio.Reader) {
		_ = agentproto.WriteJSONFrame(st, agentproto.FrameResize, agentproto.Resize{Rows: 50, Cols: 132})
		time.Sleep(50 * time.Millisecond)
		_ = agentproto.WriteFrame(st, agentproto.FrameStdin, []byte("go\n"))
	})
	if !strings.HasSuffix(res.stdout, "50 132\r\n") {
		t.Fatalf("after resize: %q", res.stdout)
	}
	// A background grandchild holding the terminal must not hang the exec.
	start := time.Now()
	res = h.exec(agentproto.Request{Argv: []string{"sh", "-c", "trap '' HUP; sleep 30 & echo bye"}, TTY: true}, "", nil)
	if !strings.Contains(res.stdout, "bye") || res.exit.Code != 0 || time.Since(start) > 5*time.Second {
		t.Fatalf("background grandchild with a TTY: %+v after %s", res, time.Since(start))
	}
	// ^D via StdinEOF ends cat.
	res = h.exec(agentproto.Request{Argv: []string{"cat"}, TTY: true}, "", func(st net.Conn, _ *bytes.Buffer, _ *bufio.Reader) {
		_ = agentproto.WriteFrame(st, agentproto.FrameStdinEOF, nil)
	})
	if res.exit.Code != 0 {
		t.Fatalf("cat after EOF: %+v", res)
	}
}

func TestPutGet(t *testing.T) {
	h := newHost(t, testServer())
	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "file")
	data := bytes.Repeat([]byte("banger\x00\xff"), 100000) // larger than a stream window

	st, br, rep := h.call(agentproto.Request{Op: agentproto.OpPut, Path: path, Mode: 0o751, Size: int64(len(data)), UID: os.Getuid(), GID: os.Getgid(), Mkdirs: true})
	if !rep.OK {
		t.Fatalf("put: %s", rep.Error)
	}
	if _, err := st.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := agentproto.ReadJSONLine(br, &rep); err != nil || !rep.OK {
		t.Fatalf("put final reply: %+v %v", rep, err)
	}
	st.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o751 {
		t.Fatalf("stat after put: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "a", "b", ".banger-put-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	st, br, rep = h.call(agentproto.Request{Op: agentproto.OpGet, Path: path})
	if !rep.OK || rep.Size != int64(len(data)) || rep.FileMode != 0o751 {
		t.Fatalf("get reply: %+v", rep)
	}
	got := make([]byte, rep.Size)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("get returned different bytes")
	}

	// Default mode, no parents requested.
	st, br, rep = h.call(agentproto.Request{Op: agentproto.OpPut, Path: filepath.Join(dir, "plain"), Size: 2, UID: os.Getuid(), GID: os.Getgid()})
	if !rep.OK {
		t.Fatal(rep.Error)
	}
	_, _ = st.Write([]byte("hi"))
	if err := agentproto.ReadJSONLine(br, &rep); err != nil || !rep.OK {
		t.Fatalf("put final reply: %+v %v", rep, err)
	}
	st.Close()
	if fi, err := os.Stat(filepath.Join(dir, "plain")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("default mode: %v %v", fi, err)
	}
}

func TestPutGetErrors(t *testing.T) {
	h := newHost(t, testServer())
	dir := t.TempDir()
	for _, req := range []agentproto.Request{
		{Op: agentproto.OpGet, Path: dir},
		{Op: agentproto.OpGet, Path: filepath.Join(dir, "missing")},
		{Op: agentproto.OpGet, Path: "relative"},
		{Op: agentproto.OpPut, Path: filepath.Join(dir, "no", "parents"), Size: 1},
		{Op: agentproto.OpPut, Path: dir, Size: 1},
	} {
		st, _, rep := h.call(req)
		st.Close()
		if rep.OK || rep.Error == "" {
			t.Errorf("%s %s: reply %+v, want an error", req.Op, req.Path, rep)
		}
	}
}

func TestHostnameValidation(t *testing.T) {
	for _, bad := range []string{"", "a b", "x/y", strings.Repeat("a", 65)} {
		if err := validHostname(bad); err == nil {
			t.Errorf("validHostname(%q) accepted", bad)
		}
	}
	if err := validHostname("vm-1.example"); err != nil {
		t.Error(err)
	}
}

func TestReconnect(t *testing.T) {
	srv := testServer()
	for i := 0; i < 2; i++ {
		h := newHost(t, srv)
		res := h.exec(agentproto.Request{Argv: []string{"echo", "again"}}, "", nil)
		if res.stdout != "again\n" {
			t.Fatalf("connection %d: %+v", i, res)
		}
		_ = h.sess.Close()
	}
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func fmtSscan(s string, v *int) (int, error) { return fmt.Sscan(s, v) }

// A host that sends SYNC and never reads the reply does not hold the
// connection past HandshakeTimeout: ServeConn closes it and returns.
func TestHandshakeDeadline(t *testing.T) {
	old := HandshakeTimeout
	HandshakeTimeout = 200 * time.Millisecond
	defer func() { HandshakeTimeout = old }()
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	served := make(chan error, 1)
	go func() { served <- (&Server{}).ServeConn(guestEnd) }()
	if _, err := hostEnd.Write([]byte("BANGER-SYNC 0123456789abcdef\n")); err != nil {
		t.Fatal(err)
	}
	// The guest's ACK now blocks on the pipe: nobody reads it.
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "not done within") {
			t.Errorf("ServeConn = %v, want the handshake deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn still blocked in the handshake after 5 s")
	}
}
