package helper

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/privop"

	"golang.org/x/sys/unix"
)

// rawCallFiles sends body as a request frame with files' fds on its first
// byte and returns the decoded answer.
func rawCallFiles(t *testing.T, sock string, body []byte, files []*os.File) error {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	frame := privop.Frame(body)
	if _, _, err := conn.WriteMsgUnix(frame, unix.UnixRights(fds...), nil); err != nil {
		t.Fatalf("send request: %v", err)
	}
	answer, err := privop.ReadFrame(conn, privop.MaxAnswer)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	_, err = privop.DecodeAnswer(answer)
	return err
}

func devNulls(t *testing.T, n int) []*os.File {
	t.Helper()
	out := make([]*os.File, n)
	for i := range out {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		out[i] = f
	}
	return out
}

// The fds beside a request must match the op: one per file of a launch,
// none otherwise, never more than privop.MaxRequestFiles. Refusals happen
// before the op runs, so nothing reaches the jail base.
func TestServerRefusesWrongRequestFiles(t *testing.T) {
	h := startServer(t, nil)
	launch := `{"op":"launch_firecracker","args":{"vm_id":"vm-1",` +
		`"files":[{"role":"console"},{"role":"kernel","name":"vmlinux"},{"role":"drive","name":"rootfs"}]}}`
	tests := []struct {
		name  string
		body  string
		files int
		msg   string
	}{
		{"launch without fds", launch, 0, "carries 0 fds, want 3"},
		{"launch with too few fds", launch, 2, "carries 2 fds, want 3"},
		{"launch with too many fds", launch, 4, "carries 4 fds, want 3"},
		{"ping with an fd", `{"op":"ping"}`, 1, "carries 1 fds, want 0"},
		{"cleanup with an fd", `{"op":"cleanup_jail","args":{"vm_id":"vm-1"}}`, 1, "carries 1 fds, want 0"},
		{"past the fd cap", launch, privop.MaxRequestFiles + 1, "more than 16 fds"},
		{"bad vm id", strings.Replace(launch, "vm-1", "../../etc", 1), 3, "vm id"},
		{"unicode vm id", strings.Replace(launch, "vm-1", "vmé", 1), 3, "vm id"},
		{"dial bad vm id", `{"op":"dial_jail","args":{"vm_id":"vm/1","socket":"api"}}`, 0, "vm id"},
		{"dial a path", `{"op":"dial_jail","args":{"vm_id":"vm-1","socket":"/run/docker.sock"}}`, 0, "socket"},
		{"signal a pid", `{"op":"signal_vmm","args":{"vm_id":"vm-1","signal":"kill","pid":1}}`, 0, "unknown field"},
		{"launch naming a jailer", strings.Replace(launch, `"vm_id":"vm-1",`, `"vm_id":"vm-1","jailer_bin":"/usr/bin/sudo",`, 1), 3, "unknown field"},
		{"cleanup vm id too long", `{"op":"cleanup_jail","args":{"vm_id":"` + strings.Repeat("a", 65) + `"}}`, 0, "vm id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, rawCallFiles(t, h.sock, []byte(tc.body), devNulls(t, tc.files)), privop.CodeBadRequest, tc.msg)
		})
	}
	if _, err := os.Lstat(filepath.Join(h.stateDir, JailDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused request reached the jail base: %v", err)
	}
	// The client refuses a mismatch before sending anything.
	if _, _, err := h.client.CallWithFiles(ctxT(t), privop.Ping{}, devNulls(t, 1)); err == nil || !strings.Contains(err.Error(), "1 files given") {
		t.Errorf("client sent ping with a file: %v", err)
	}
	// And the server still serves.
	if _, err := h.client.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestServerJailOpsWithoutJail(t *testing.T) {
	h := startServer(t, nil)
	ctx := ctxT(t)
	// Nothing recorded, nothing on disk: cleanup is a no-op, dial and
	// signal have nothing to act on.
	if err := h.client.CleanupJail(ctx, "vm-none"); err != nil {
		t.Errorf("cleanup of a VM without a jail: %v", err)
	}
	_, err := h.client.DialJail(ctx, "vm-none", privop.SocketAPI, 0)
	wantCode(t, err, privop.CodeNotFound, "no jail for VM vm-none")
	wantCode(t, h.client.SignalVMM(ctx, "vm-none", privop.SignalKill), privop.CodeNotFound, "no firecracker recorded for VM vm-none")
}

func TestServerJailsNeedStateDir(t *testing.T) {
	h := startServer(t, func(c *Config) { c.StateDir = ""; c.Images = nil })
	wantCode(t, h.client.CleanupJail(ctxT(t), "vm-1"), privop.CodeInternal, "jails not configured")
}

func TestJailLedger(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenJailLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := JailEntry{ExecName: "firecracker", Chroot: "/j/firecracker/vm-1/root", CreatedAt: time.Unix(1, 0).UTC()}
	if ok, err := l.add("vm-1", e); !ok || err != nil {
		t.Fatalf("add = %v, %v", ok, err)
	}
	if ok, err := l.add("vm-1", JailEntry{ExecName: "other"}); ok || err != nil {
		t.Fatalf("second add = %v, %v; want false, nil", ok, err)
	}
	e.PID, e.PIDStart = 42, 4242
	if err := l.set("vm-1", e); err != nil {
		t.Fatal(err)
	}
	if _, err := l.add("vm-2", JailEntry{ExecName: "firecracker", Chroot: "/j/firecracker/vm-2/root"}); err != nil {
		t.Fatal(err)
	}
	if err := l.remove("vm-2"); err != nil {
		t.Fatal(err)
	}
	// A restart reads back what was written.
	l2, err := OpenJailLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := l2.Jail("vm-1"); !ok || got != e {
		t.Errorf("reopened entry = %+v, %v; want %+v", got, ok, e)
	}
	if ids := l2.VMIDs(); len(ids) != 1 || ids[0] != "vm-1" {
		t.Errorf("reopened VMIDs = %v", ids)
	}
	data, err := os.ReadFile(filepath.Join(dir, JailLedgerFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"jails"`, `"vm-1"`, `"exec_name": "firecracker"`, `"chroot": "/j/firecracker/vm-1/root"`, `"pid": 42`, `"pid_start": 4242`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("ledger file lacks %s:\n%s", want, data)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, JailLedgerFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ledger file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	for name, content := range map[string]string{
		"truncated":     `{"jails":`,
		"unknown field": `{"jails":{},"extra":1}`,
		"bad vm id":     `{"jails":{"../x":{"exec_name":"firecracker","chroot":"/x"}}}`,
	} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, JailLedgerFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenJailLedger(bad); err == nil {
			t.Errorf("OpenJailLedger accepted a %s ledger", name)
		}
	}
	linked := t.TempDir()
	if err := os.Symlink(filepath.Join(dir, JailLedgerFile), filepath.Join(linked, JailLedgerFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenJailLedger(linked); err == nil {
		t.Error("OpenJailLedger followed a symlink")
	}
}

func TestConfigureJails(t *testing.T) {
	cfg := Config{StateDir: t.TempDir()}
	if err := configureJails(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.JailBase != filepath.Join(cfg.StateDir, "jail") || cfg.Jails == nil {
		t.Errorf("defaults: base %q, ledger %v", cfg.JailBase, cfg.Jails)
	}
	if err := configureJails(&Config{JailBase: "rel/jail"}); err == nil {
		t.Error("a relative jail base was accepted")
	}
}

// A kernel or initrd larger than maxBootFile is refused before anything is
// copied into root's state directory.
func TestBootCacheRefusesHugeFiles(t *testing.T) {
	dir := t.TempDir()
	src, err := os.Create(filepath.Join(dir, "vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Truncate(maxBootFile + 1); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(src.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	c := bootCache{dir: filepath.Join(dir, "cache")}
	_, err = c.file(ro)
	wantCode(t, err, privop.CodeBadRequest, "more than the")
	if ents, _ := os.ReadDir(c.dir); len(ents) != 0 {
		t.Errorf("the cache holds %v after a refusal", ents)
	}
	// One within the bound is copied once, then found again.
	if err := src.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	a, err := c.file(ro)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := c.file(ro)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if ents, _ := os.ReadDir(c.dir); len(ents) != 1 {
		t.Errorf("the cache holds %d entries for one file, want 1", len(ents))
	}
}
