package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/version"
)

// hostileDaemon serves what a bangerd passes on from a hostile guest: its
// ports, its console and its error text.
func hostileDaemon(t *testing.T, sock string, ports []api.Port, console string, errText string) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(api.Ping{APIVersion: api.Version, Version: version.Version, PID: 1 << 30})
	})
	m.HandleFunc("GET /v1/vms/dev/ports", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(ports) })
	m.HandleFunc("GET /v1/vms/dev/logs", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(console)) })
	m.HandleFunc("GET /v1/vms/dev/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: api.Error{Code: errdefs.CodeUnavailable, Message: errText}})
	})
	srv := &http.Server{Handler: m}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// noTerminalControls fails when out holds anything a terminal acts on
// other than a newline.
func noTerminalControls(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Fatalf("%s holds %U: %q", what, r, out)
		}
	}
}

var hostilePorts = []api.Port{{
	Proto:    "tcp\x1b[2J",
	Addr:     "\u202e1.0.0.721",
	Port:     8080,
	PID:      42,
	Process:  "\x1b]0;owned\x07web\nfake\trow\u009b6n",
	Endpoint: "dev.vm:8080",
}}

func TestPortsEscapesGuestText(t *testing.T) {
	dir := shortTemp(t)
	hostileDaemon(t, filepath.Join(dir, "d.sock"), hostilePorts, "", "")
	e, stdout, _ := envFor(t, dir)
	if err := execIn(t, e, "vm", "ports", "dev"); err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	noTerminalControls(t, "vm ports", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("a guest's process name added rows to the table:\n%s", out)
	}
	for _, want := range []string{`tcp\x1b[2J`, `\u202e1.0.0.721`, `\x1b]0;owned\aweb\nfake\trow\u009b6n[42]`, "dev.vm:8080"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
}

// --json keeps the guest's values exactly (scripts get them back), yet
// prints nothing a terminal acts on.
func TestPortsJSONIsTerminalSafe(t *testing.T) {
	dir := shortTemp(t)
	hostileDaemon(t, filepath.Join(dir, "d.sock"), hostilePorts, "", "")
	e, stdout, _ := envFor(t, dir)
	if err := execIn(t, e, "vm", "ports", "dev", "--json"); err != nil {
		t.Fatal(err)
	}
	noTerminalControls(t, "vm ports --json", stdout.String())
	var back []api.Port
	if err := json.Unmarshal(stdout.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0] != hostilePorts[0] {
		t.Fatalf("--json changed the values: %+v", back)
	}
}

const hostileConsole = "[    0.1] Linux\r\n[\x1b[0;32m  OK  \x1b[0m] Started\r\n\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4=\x07evil\rgood\x00\u202e\n"

func TestLogsPrintsPrintableText(t *testing.T) {
	dir := shortTemp(t)
	hostileDaemon(t, filepath.Join(dir, "d.sock"), nil, hostileConsole, "")
	e, stdout, _ := envFor(t, dir)
	if err := execIn(t, e, "vm", "logs", "dev"); err != nil {
		t.Fatal(err)
	}
	want := "[    0.1] Linux\n[  OK  ] Started\nevilgood\\x00\\u202e\n"
	if got := stdout.String(); got != want {
		t.Fatalf("vm logs printed %q, want %q", got, want)
	}
}

func TestLogsRawPrintsTheBytes(t *testing.T) {
	dir := shortTemp(t)
	hostileDaemon(t, filepath.Join(dir, "d.sock"), nil, hostileConsole, "")
	e, stdout, _ := envFor(t, dir)
	if err := execIn(t, e, "vm", "logs", "--raw", "dev"); err != nil {
		t.Fatal(err)
	}
	if got := stdout.String(); got != hostileConsole {
		t.Fatalf("vm logs --raw printed %q, want the console as it is", got)
	}
}

// Guest text inside a bangerd error (here: stats' reason) is printed on one
// escaped line.
func TestErrorsEscapeGuestText(t *testing.T) {
	dir := shortTemp(t)
	hostileDaemon(t, filepath.Join(dir, "d.sock"), nil, "", "ask the guest agent: \x1b]0;owned\x07\x1b[1A\x1b[2Kall good\u202e")
	e, stdout, stderr := envFor(t, dir)
	err := execIn(t, e, "vm", "stats", "dev", "--interval", "0")
	if err == nil {
		t.Fatal("stats of an unavailable VM succeeded")
	}
	out := stdout.String() + stderr.String() + formatError(err)
	noTerminalControls(t, "vm stats", out)
	if !strings.Contains(out, `\x1b]0;owned\a\x1b[1A\x1b[2Kall good\u202e`) {
		t.Fatalf("the guest's text is not shown escaped:\n%s", out)
	}
	if got := formatError(errdefs.Unavailable("exec in dev: \x1b]52;c;cm0=\x07\r\nok")); got != `banger: unavailable: exec in dev: \x1b]52;c;cm0=\a\r ok` {
		t.Fatalf("formatError = %q", got)
	}
}

func TestGuestOutputIsBounded(t *testing.T) {
	g := newGuestOutput(16)
	chunk := bytes.Repeat([]byte("x"), 1<<10)
	for range 1024 {
		if n, err := g.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v; it must drain the stream", n, err)
		}
	}
	if g.buf.Len() > 16 {
		t.Fatalf("kept %d bytes of guest output, want at most 16", g.buf.Len())
	}
	if got, want := g.String(), strings.Repeat("x", 16)+" ... (1048560 more bytes)"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

// Waiting for a guest's SSH server reads its first bytes only: a guest
// port that streams bytes without a newline is not buffered by the CLI.
func TestWaitSSHReadsABoundedBanner(t *testing.T) {
	dir := shortTemp(t)
	ln, err := net.Listen("unix", filepath.Join(dir, "d.sock"))
	if err != nil {
		t.Fatal(err)
	}
	const flood = 64 << 20
	var mu sync.Mutex
	var handlers sync.WaitGroup
	most := 0
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(api.Ping{APIVersion: api.Version, Version: version.Version, PID: 1 << 30})
	})
	m.HandleFunc("POST /v1/vms/dev/connect", func(w http.ResponseWriter, _ *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + api.ConnectUpgrade + "\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		_ = conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		sent := 0
		for sent < flood {
			n, err := conn.Write(chunk)
			sent += n
			if err != nil {
				break
			}
		}
		mu.Lock()
		most = max(most, sent)
		mu.Unlock()
	})
	srv := &http.Server{Handler: m}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	e, _, _ := envFor(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.waitSSH(ctx, "dev", 300*time.Millisecond); err == nil {
		t.Fatal("a port that is not SSH passed for an SSH server")
	}
	_ = srv.Close()
	handlers.Wait()
	mu.Lock()
	defer mu.Unlock()
	if most >= 4<<20 {
		t.Fatalf("the CLI took %d bytes from a port that never sent a newline", most)
	}
}
