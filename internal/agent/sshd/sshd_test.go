package sshd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(reaperHelperEnv) == "1" {
		os.Exit(reaperHelper())
	}
	goleak.VerifyTestMain(m)
}

type testEnv struct {
	addr       string
	hostKey    ssh.Signer
	clientKey  ed25519.PrivateKey
	clientSign ssh.Signer
	srv        *Server
}

func newKey(t testing.TB) (ed25519.PrivateKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func startServer(t testing.TB, mod func(*Config)) *testEnv {
	t.Helper()
	_, host := newKey(t)
	priv, client := newKey(t)
	authorized := string(ssh.MarshalAuthorizedKey(client.PublicKey()))
	cfg := Config{
		HostKeys: []ssh.Signer{host},
		AuthorizedKeys: func() ([]ssh.PublicKey, error) {
			return ParseAuthorizedKeys([]byte("# comment\n\n" + authorized))
		},
		Logf: t.Logf,
	}
	if os.Geteuid() != 0 {
		// Unprivileged test runs cannot use /root; the shell would trip
		// over its unreadable startup files.
		cfg.Home = t.TempDir()
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &testEnv{addr: l.Addr().String(), hostKey: host, clientKey: priv, clientSign: client, srv: srv}
}

func (e *testEnv) dial(t testing.TB, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", e.addr, &ssh.ClientConfig{
		User:            "anyone",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
		Timeout:         5 * time.Second,
	})
}

func (e *testEnv) client(t testing.TB) *ssh.Client {
	t.Helper()
	c, err := e.dial(t, e.clientSign)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newSession(t testing.TB, c *ssh.Client) *ssh.Session {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func exitStatus(t testing.TB, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *ssh.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want exit error, got %v", err)
	}
	return ee.ExitStatus()
}

func TestExecSplitsOutputAndReportsStatus(t *testing.T) {
	e := startServer(t, nil)
	s := newSession(t, e.client(t))
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err := s.Run("echo out; echo err >&2; exit 7")
	if got := exitStatus(t, err); got != 7 {
		t.Errorf("exit status %d, want 7", got)
	}
	if out.String() != "out\n" || errb.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
}

func TestExecEnvironment(t *testing.T) {
	e := startServer(t, func(c *Config) { c.Env = []string{"BASE=1"} })
	s := newSession(t, e.client(t))
	if err := s.Setenv("FOO", "bar baz"); err != nil {
		t.Fatalf("setenv FOO: %v", err)
	}
	if err := s.Setenv("LD_PRELOAD", "/x.so"); err == nil {
		t.Error("LD_PRELOAD accepted")
	}
	if err := s.Setenv("HOME", "/tmp"); err == nil {
		t.Error("HOME accepted")
	}
	out, err := s.Output(`echo "$FOO|${LD_PRELOAD-unset}|$HOME|$USER|$BASE|${SSH_CONNECTION:+set}|${SSH_TTY-none}"; pwd`)
	if err != nil {
		t.Fatal(err)
	}
	want := "bar baz|unset|" + e.srv.home + "|root|1|set|none\n" + workDirFor(e.srv.home) + "\n"
	if string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestExecStdinEOF(t *testing.T) {
	e := startServer(t, nil)
	s := newSession(t, e.client(t))
	s.Stdin = strings.NewReader("line1\nline2\n")
	out, err := s.Output("cat; echo done")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "line1\nline2\ndone\n" {
		t.Errorf("got %q", out)
	}
}

func TestExecBackgroundChildDoesNotHang(t *testing.T) {
	e := startServer(t, nil)
	s := newSession(t, e.client(t))
	start := time.Now()
	out, err := s.Output("sleep 3 & echo started")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "started\n" {
		t.Errorf("got %q", out)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("exec took %v; the drain should be bounded", d)
	}
}

func TestPTYSession(t *testing.T) {
	e := startServer(t, nil)
	c := e.client(t)

	s := newSession(t, c)
	if err := s.RequestPty("xterm-test", 40, 100, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("tty; stty size; echo $TERM; echo ${SSH_TTY:+set}")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.ReplaceAll(string(out), "\r", ""), "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[0], "/dev/pts/") || lines[1] != "40 100" || lines[2] != "xterm-test" || lines[3] != "set" {
		t.Errorf("got %q", out)
	}

	s2 := newSession(t, c)
	if err := s2.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	s2.Stdout = &buf
	if err := s2.Start("sleep 0.5; stty size"); err != nil {
		t.Fatal(err)
	}
	if err := s2.WindowChange(50, 120); err != nil {
		t.Fatal(err)
	}
	if err := s2.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(buf.String()); got != "50 120" {
		t.Errorf("after window-change stty size = %q", got)
	}
}

func TestInteractiveShell(t *testing.T) {
	e := startServer(t, nil)
	s := newSession(t, e.client(t))
	if err := s.RequestPty("xterm", 24, 80, nil); err != nil {
		t.Fatal(err)
	}
	in, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out testutil.SyncBuffer
	s.Stdout = &out
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, "echo $((6*7)) $0\nexit 3\n"); err != nil {
		t.Fatal(err)
	}
	if got := exitStatus(t, s.Wait()); got != 3 {
		t.Errorf("exit status %d, want 3", got)
	}
	want := "42 -" + filepath.Base(defaultShell())
	if !strings.Contains(out.String(), want) {
		t.Errorf("output %q lacks %q", out.String(), want)
	}
}

func TestSignalAndExitSignal(t *testing.T) {
	e := startServer(t, nil)
	s := newSession(t, e.client(t))
	stdout, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("echo ready; exec sleep 30"); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 6)
	if _, err := io.ReadFull(stdout, line); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let exec replace the shell
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("want exit-signal TERM, got %v", err)
	}
}

func TestClosedChannelKillsProgram(t *testing.T) {
	e := startServer(t, nil)
	c := e.client(t)
	s := newSession(t, c)
	stdout, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("echo $$; exec sleep 30"); err != nil {
		t.Fatal(err)
	}
	var pidLine string
	if _, err := fmt.Fscanln(stdout, &pidLine); err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(pidLine)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive after disconnect", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRejections(t *testing.T) {
	e := startServer(t, nil)
	_, other := newKey(t)
	if c, err := e.dial(t, other); err == nil {
		_ = c.Close()
		t.Fatal("unauthorized key accepted")
	}
	c := e.client(t)
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Error("tcpip-forward accepted")
	}
	ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil || !ok {
		t.Errorf("keepalive: ok=%v err=%v", ok, err)
	}
	if ok, _, _ := c.SendRequest("bogus@example", true, nil); ok {
		t.Error("unknown global request accepted")
	}
	if _, _, err := c.OpenChannel("bogus", nil); err == nil {
		t.Error("unknown channel type accepted")
	}
	s := newSession(t, c)
	if err := s.RequestSubsystem("nope"); err == nil {
		t.Error("unknown subsystem accepted")
	}
}

func TestAuthorizedKeysReloaded(t *testing.T) {
	_, k1 := newKey(t)
	_, k2 := newKey(t)
	var current atomic.Pointer[ssh.Signer]
	current.Store(&k1)
	e := startServer(t, func(c *Config) {
		c.AuthorizedKeys = func() ([]ssh.PublicKey, error) { return []ssh.PublicKey{(*current.Load()).PublicKey()}, nil }
	})
	c, err := e.dial(t, k1)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	current.Store(&k2)
	if c, err := e.dial(t, k1); err == nil {
		_ = c.Close()
		t.Fatal("old key still accepted")
	}
	c, err = e.dial(t, k2)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}

func TestParseAuthorizedKeys(t *testing.T) {
	_, a := newKey(t)
	_, b := newKey(t)
	in := "# c\n\n" + string(ssh.MarshalAuthorizedKey(a.PublicKey())) +
		`command="true" ` + string(ssh.MarshalAuthorizedKey(b.PublicKey()))
	keys, err := ParseAuthorizedKeys([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !bytes.Equal(keys[0].Marshal(), a.PublicKey().Marshal()) {
		t.Errorf("got %d keys, want only the unrestricted one", len(keys))
	}
	if _, err := ParseAuthorizedKeys([]byte("garbage\n")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestLoadHostKey(t *testing.T) {
	priv, s := newKey(t)
	p := filepath.Join(t.TempDir(), "host")
	writeKey(t, p, priv)
	k, err := LoadHostKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey().Marshal(), s.PublicKey().Marshal()) {
		t.Error("loaded a different key")
	}
	if _, err := LoadHostKey(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing key loaded")
	}
}

func startEcho(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
	return l.Addr().String()
}

func TestDirectTCPIP(t *testing.T) {
	e := startServer(t, nil)
	echo := startEcho(t)
	c := e.client(t)
	conn, err := c.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "hello through the tunnel"); err != nil {
		t.Fatal(err)
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello through the tunnel" {
		t.Errorf("echo returned %q", got)
	}

	// A closed port is refused, not accepted and dropped.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close()
	if conn, err := c.Dial("tcp", dead); err == nil {
		_ = conn.Close()
		t.Error("dial to a closed port succeeded")
	}
}

func TestSFTP(t *testing.T) {
	e := startServer(t, nil)
	c := e.client(t)
	fc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	dir := t.TempDir()
	payload := bytes.Repeat([]byte("banger "), 10000)

	f, err := fc.Create(filepath.Join(dir, "up.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, "up.txt"))
	if err != nil || !bytes.Equal(onDisk, payload) {
		t.Fatalf("put: err=%v equal=%v", err, bytes.Equal(onDisk, payload))
	}
	if err := os.WriteFile(filepath.Join(dir, "down.txt"), []byte("from guest"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := fc.Open(filepath.Join(dir, "down.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || string(got) != "from guest" {
		t.Fatalf("get: %q %v", got, err)
	}
	entries, err := fc.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if strings.Join(names, ",") != "down.txt,up.txt" && strings.Join(names, ",") != "up.txt,down.txt" {
		t.Errorf("list: %v", names)
	}
	wd, err := fc.Getwd()
	if want := workDirFor(e.srv.home); err != nil || wd != want {
		t.Errorf("working directory %q %v, want %s", wd, err, want)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	e := startServer(t, nil)
	c := e.client(t)
	s := newSession(t, c)
	if err := s.Start("sleep 30"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.srv.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := s.Wait(); err == nil {
		t.Error("session survived Close")
	}
}

func TestServeConn(t *testing.T) {
	e := startServer(t, nil)
	a, b := connPair(t)
	done := make(chan struct{})
	go func() { defer close(done); e.srv.ServeConn(a) }()
	sc, chans, reqs, err := ssh.NewClientConn(b, "pair", &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(e.clientSign)},
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := ssh.NewClient(sc, chans, reqs)
	s := newSession(t, c)
	out, err := s.Output("echo piped")
	if err != nil || string(out) != "piped\n" {
		t.Errorf("got %q %v", out, err)
	}
	_ = c.Close()
	<-done
}

// connPair returns both ends of a loopback TCP connection. (net.Pipe is
// unbuffered, so both SSH sides writing their version line would deadlock.)
func connPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	a, b, err := loopbackPair()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func loopbackPair() (net.Conn, net.Conn, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	b, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	a, err := l.Accept()
	if err != nil {
		_ = b.Close()
		return nil, nil, err
	}
	return a, b, nil
}
