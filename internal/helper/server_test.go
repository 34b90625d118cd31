package helper

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/privop"
	"banger/internal/privop/client"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m)
}

// harness is a helper Server on a real unix socket, with a fake Net.
type harness struct {
	sock     string
	stateDir string
	net      *fakeNet
	ledger   *Ledger
	owner    int
	client   *client.Client
}

// shortDir returns a short temporary directory (unix socket paths are
// limited to 108 bytes), removed after the test.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// testOwner is the owner uid for in-process tests: the test's own uid,
// or an arbitrary non-root uid when the tests run as root.
func testOwner() int {
	if os.Getuid() == 0 {
		return 4242
	}
	return os.Getuid()
}

func startServer(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	base := shortDir(t)
	h := &harness{
		sock:     filepath.Join(base, "run", "helper.sock"),
		stateDir: filepath.Join(base, "state"),
		net:      newFakeNet(base),
		owner:    testOwner(),
	}
	if err := PrepareStateDir(h.stateDir); err != nil {
		t.Fatal(err)
	}
	var err error
	if h.ledger, err = OpenLedger(h.stateDir); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Net: h.net, Ledger: h.ledger, OwnerUID: h.owner, OwnerGID: os.Getgid(), Version: "test", StateDir: h.stateDir,
		Resolver: &fakeResolver{reason: "fake resolver: not available"}} // never the host's resolvectl
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(h.sock, os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(h.sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind after shutdown: %v", err)
		}
	})
	h.client = &client.Client{Socket: h.sock, HelperUID: uint32(os.Geteuid())}
	return h
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code privop.Code, msg string) {
	t.Helper()
	var e *privop.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want a *privop.Error %s", err, err, code)
	}
	if e.Code != code || !strings.Contains(e.Message, msg) {
		t.Fatalf("error %s %q, want %s mentioning %q", e.Code, e.Message, code, msg)
	}
}

func TestServerFullFlow(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	c := h.client

	ping, err := c.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ping.Version != "test" || ping.OwnerUID != h.owner || ping.PeerUID != os.Geteuid() || len(ping.Ops) != len(privop.HelperOps()) {
		t.Errorf("ping = %+v", ping)
	}
	steps := []privop.Op{
		privop.EnsureBridge{Bridge: "br-fc", Gateway: "172.16.0.1/24", MTU: 1500},
		privop.CreateTap{Tap: "tap-fc-a1", Bridge: "br-fc", MTU: 1500, IP: "172.16.0.2"},
		privop.CreateTap{Tap: "tap-fc-b2", Bridge: "br-fc", MTU: 1400, IP: "172.16.0.3"},
		privop.ApplyFirewall{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1", DNSPorts: []int{53},
			AllowHost: []string{"127.0.0.1:8080"}, VMToVM: true, NAT: []string{"172.16.0.2"}},
		privop.DeleteTap{Tap: "tap-fc-b2"},
	}
	for _, op := range steps {
		if err := c.Do(ctx, op, nil); err != nil {
			t.Fatalf("%s: %v", op.Name(), err)
		}
	}
	f, err := c.OpenTap(ctx, "tap-fc-a1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != "queue of tap-fc-a1" {
		t.Errorf("fd passed for tap-fc-a1 reads %q, %v", got, err)
	}

	want := "bridge br-fc gateway=172.16.0.1/24 mtu=1500\n" +
		"tap tap-fc-a1 bridge=br-fc owner=" + itoa(h.owner) + ":" + itoa(os.Getgid()) + " mtu=1500\n" +
		"firewall bridge=br-fc subnet=172.16.0.0/24 gateway=172.16.0.1 dns=[53] allow=[127.0.0.1:8080] vm2vm=true nat=[172.16.0.2]\n"
	if got := h.net.Render(); got != want {
		t.Errorf("host state:\n%s\nwant:\n%s", got, want)
	}

	// The ledger survives a restart of the helper.
	l2, err := OpenLedger(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	bridges, taps := l2.Names()
	if strings.Join(bridges, ",") != "br-fc" || strings.Join(taps, ",") != "tap-fc-a1" {
		t.Errorf("reopened ledger: bridges %v taps %v", bridges, taps)
	}

	// A bridge with taps is not deleted; once empty it is.
	err = c.Do(ctx, privop.DeleteBridge{Bridge: "br-fc"}, nil)
	wantCode(t, err, privop.CodeBadRequest, "still has taps")
	for _, op := range []privop.Op{privop.DeleteTap{Tap: "tap-fc-a1"}, privop.ClearFirewall{}, privop.DeleteBridge{Bridge: "br-fc"}} {
		if err := c.Do(ctx, op, nil); err != nil {
			t.Fatalf("%s: %v", op.Name(), err)
		}
	}
	if got := h.net.Render(); got != "\n" {
		t.Errorf("host state after cleanup:\n%s", got)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func TestServerRefusesDevicesNotInLedger(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	h.net.addForeignTap("tap-fc-x") // exists, matches the pattern, not ours
	before := h.net.Render()

	for _, op := range []privop.Op{privop.DeleteTap{Tap: "tap-fc-x"}, privop.OpenTap{Tap: "tap-fc-x"}} {
		_, f, err := h.client.Call(ctx, op)
		if f != nil {
			f.Close()
			t.Errorf("%s passed an fd", op.Name())
		}
		wantCode(t, err, privop.CodeForbidden, "tap tap-fc-x was not created by banger")
	}
	err := h.client.Do(ctx, privop.CreateTap{Tap: "tap-fc-y", Bridge: "br-fc-other", MTU: 1500, IP: "172.16.0.9"}, nil)
	wantCode(t, err, privop.CodeForbidden, "bridge br-fc-other was not created by banger")
	err = h.client.Do(ctx, privop.DeleteBridge{Bridge: "br-fc"}, nil)
	wantCode(t, err, privop.CodeForbidden, "bridge br-fc was not created by banger")
	err = h.client.Do(ctx, privop.ApplyFirewall{Bridge: "br-fc", Subnet: "172.16.0.0/24", Gateway: "172.16.0.1"}, nil)
	wantCode(t, err, privop.CodeForbidden, "not created by banger")

	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("refused requests reached the host: %v", calls)
	}
	if after := h.net.Render(); after != before {
		t.Errorf("host changed:\n%s\nwas:\n%s", after, before)
	}
}

// rawCall sends raw bytes as a request and returns the decoded answer.
func rawCall(t *testing.T, sock string, data []byte) error {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = conn.Write(data) }() // may block on a huge body; ends when conn closes
	body, err := privop.ReadFrame(conn, privop.MaxAnswer)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	_, err = privop.DecodeAnswer(body)
	return err
}

func TestServerRefusesBadRequests(t *testing.T) {
	h := startServer(t, nil)
	tests := []struct {
		name string
		body []byte
		msg  string
	}{
		{"unknown op", privop.Frame([]byte(`{"op":"run_shell","args":{"cmd":"id"}}`)), `unknown op "run_shell"`},
		{"unknown field", privop.Frame([]byte(`{"op":"create_tap","args":{"tap":"tap-fc-a","bridge":"br-fc","mtu":1500,"uid":0}}`)), "unknown field"},
		{"eth0", privop.Frame([]byte(`{"op":"delete_tap","args":{"tap":"eth0"}}`)), "not a banger tap"},
		{"bridge without prefix", privop.Frame([]byte(`{"op":"ensure_bridge","args":{"bridge":"docker0","gateway":"172.16.0.1/24","mtu":1500}}`)), "not a banger bridge"},
		{"public cidr", privop.Frame([]byte(`{"op":"ensure_bridge","args":{"bridge":"br-fc","gateway":"8.8.8.1/24","mtu":1500}}`)), "private range"},
		{"out of range cidr", privop.Frame([]byte(`{"op":"ensure_bridge","args":{"bridge":"br-fc","gateway":"10.0.0.1/31","mtu":1500}}`)), "out of range"},
		{"not json", privop.Frame([]byte("\x00\x01garbage")), "decode request"},
		{"10 MB body", append(be32(10<<20), bytes.Repeat([]byte("a"), 10<<20)...), "exceeds 65536"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, rawCall(t, h.sock, tc.body), privop.CodeBadRequest, tc.msg)
		})
	}
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("refused requests reached the host: %v", calls)
	}
}

func be32(n uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, n)
	return b
}

// A client that sends half a frame and stalls gets the deadline, and other
// clients are served meanwhile.
func TestServerStalledClientDoesNotBlockOthers(t *testing.T) {
	const timeout = 700 * time.Millisecond
	h := startServer(t, func(c *Config) { c.ReadTimeout = timeout })
	ctx := ctxT(t)

	stalled, err := net.Dial("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	frame := privop.Frame([]byte(`{"op":"ping"}`))
	if _, err := stalled.Write(frame[:7]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	// Meanwhile, several clients are served well before the deadline.
	for range 5 {
		if _, err := h.client.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took >= timeout {
		t.Errorf("other clients took %v, not served while the stalled one waited", took)
	}

	_ = stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := privop.ReadFrame(stalled, privop.MaxAnswer)
	if err != nil {
		t.Fatalf("stalled client: read answer: %v", err)
	}
	_, aerr := privop.DecodeAnswer(body)
	wantCode(t, aerr, privop.CodeBadRequest, "not received within")
	if took := time.Since(start); took < timeout-50*time.Millisecond {
		t.Errorf("deadline fired after %v, want about %v", took, timeout)
	}
	// The connection is closed after the answer.
	if n, err := stalled.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("stalled connection still open after the answer: %d, %v", n, err)
	}
}

// Past MaxConns, new connections get a busy answer instead of queueing
// behind stalled ones; once they go, service resumes.
func TestServerBoundsConnections(t *testing.T) {
	h := startServer(t, func(c *Config) { c.MaxConns = 3; c.ReadTimeout = 5 * time.Second })
	ctx := ctxT(t)
	var stalled []net.Conn
	for range 3 {
		c, err := net.Dial("unix", h.sock)
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := h.client.Ping(ctx)
		if err != nil {
			wantCode(t, err, privop.CodeInternal, "busy")
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never saw a busy answer with all slots taken")
		}
		time.Sleep(10 * time.Millisecond) // the stalled conns may not be accepted yet
	}
	for _, c := range stalled {
		c.Close()
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, err := h.client.Ping(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("service did not resume after stalled clients left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientRefusesNonRootHelper(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("in-process server runs as root; the root test TestPeerCredentials covers this")
	}
	h := startServer(t, nil)
	c := client.New(h.sock) // wants uid 0
	_, err := c.Ping(ctxT(t))
	if !errors.Is(err, client.ErrNotRoot) {
		t.Fatalf("Ping to a non-root helper = %v, want ErrNotRoot", err)
	}
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("calls: %v", calls)
	}
}

func TestListenFailsClosed(t *testing.T) {
	base := shortDir(t)
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(filepath.Join(open, "s.sock"), -1); err == nil {
		ln.Close()
		t.Error("Listen accepted a world-writable socket directory")
	}
	realDir := filepath.Join(base, "real")
	if err := os.Mkdir(realDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(realDir, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(filepath.Join(base, "link", "s.sock"), -1); err == nil {
		ln.Close()
		t.Error("Listen accepted a symlinked socket directory")
	}
	if err := os.WriteFile(filepath.Join(realDir, "s.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(filepath.Join(realDir, "s.sock"), -1); err == nil {
		ln.Close()
		t.Error("Listen replaced a regular file")
	}
	if ln, err := Listen("relative.sock", -1); err == nil {
		ln.Close()
		t.Error("Listen accepted a relative path")
	}
	// A good one: dir 0711, socket 0660.
	ln, err := Listen(filepath.Join(base, "run", "s.sock"), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for p, want := range map[string]os.FileMode{filepath.Join(base, "run"): 0o711, filepath.Join(base, "run", "s.sock"): 0o660} {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", p, fi.Mode().Perm(), err, want)
		}
	}
}

func TestLedgerRefusesCorruptFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, LedgerFile), []byte(`{"taps":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLedger(dir); err == nil {
		t.Error("OpenLedger accepted a truncated ledger")
	}
}
