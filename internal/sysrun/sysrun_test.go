package sysrun

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/errdefs"
	"banger/internal/helper"
	"banger/internal/installmeta"
	"banger/internal/version"
)

// A test binary started with childModeEnv set acts as a child process
// instead of running the tests.
const childModeEnv = "BANGER_SYSRUN_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childModeEnv) {
	case "":
		os.Exit(m.Run())
	case "term": // says hello, exits 0 on SIGTERM
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		os.Stdout.WriteString("hello\nworld\n")
		<-c
		os.Stderr.WriteString("bye\n")
		os.Exit(0)
	case "deaf": // ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(time.Minute)
		os.Exit(0)
	case "die": // fails at once
		os.Stderr.WriteString("boom\n")
		os.Exit(7)
	}
}

func child(t *testing.T, mode string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$") // this test binary
	cmd.Env = append(os.Environ(), childModeEnv+"="+mode)
	return cmd
}

func TestDefaultsMatchHelper(t *testing.T) {
	if DefaultHelperSocket != helper.DefaultSocket || DefaultHelperStateDir != helper.DefaultStateDir {
		t.Errorf("sysrun defaults %s %s differ from the helper's %s %s",
			DefaultHelperSocket, DefaultHelperStateDir, helper.DefaultSocket, helper.DefaultStateDir)
	}
}

func TestOwnerEnv(t *testing.T) {
	o := Owner{User: "dev", UID: 1000, GID: 1000, Home: "/home/dev"}
	tests := []struct {
		name                      string
		path, runtime, helperSock string
		want                      map[string]string
	}{
		{
			name: "runtime dir usable", path: "/usr/bin:/bin", runtime: "/run/user/1000", helperSock: "/run/banger-root/helper.sock",
			want: map[string]string{
				"HOME": "/home/dev", "USER": "dev", "LOGNAME": "dev", "PATH": "/usr/bin:/bin",
				"XDG_RUNTIME_DIR": "/run/user/1000", "BANGER_HELPER_SOCKET": "/run/banger-root/helper.sock",
			},
		},
		{
			name: "no runtime dir, default PATH", helperSock: "/tmp/x/h.sock",
			want: map[string]string{
				"HOME": "/home/dev", "USER": "dev", "LOGNAME": "dev", "PATH": DefaultPath,
				"BANGER_HELPER_SOCKET": "/tmp/x/h.sock",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := OwnerEnv(o, tc.path, tc.runtime, tc.helperSock)
			if len(got) != len(tc.want) {
				t.Errorf("OwnerEnv = %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			list := EnvList(got)
			if !slices.IsSorted(list) || len(list) != len(got) {
				t.Errorf("EnvList = %v", list)
			}
		})
	}
}

func TestOwnerEnvIgnoresCallerEnvironment(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/root/.state")
	t.Setenv("SUDO_USER", "someone")
	env := OwnerEnv(Owner{User: "dev", UID: 1000, GID: 1000, Home: "/home/dev"}, "", "", "/h/h.sock")
	for _, k := range []string{"XDG_STATE_HOME", "SUDO_USER", "XDG_RUNTIME_DIR"} {
		if _, ok := env[k]; ok {
			t.Errorf("OwnerEnv carries %s", k)
		}
	}
}

func TestRuntimeDirForMissing(t *testing.T) {
	// No account has this uid, so /run/user/<uid> does not exist.
	if got := RuntimeDirFor(4_000_000_000); got != "" {
		t.Errorf("RuntimeDirFor = %q, want \"\"", got)
	}
}

func TestMetadata(t *testing.T) {
	o := Owner{User: "dev", UID: 1001, GID: 1002, Groups: []uint32{1002, 27}, Home: "/home/dev"}
	now := time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("X", 3600))
	m := Metadata(o, now)
	want := installmeta.Meta{
		OwnerUser: "dev", OwnerUID: 1001, OwnerGID: 1002, OwnerHome: "/home/dev",
		Version: version.Version, Commit: version.Commit, InstalledAt: time.Date(2026, 3, 4, 4, 6, 7, 0, time.UTC),
	}
	if m != want {
		t.Errorf("Metadata = %+v, want %+v", m, want)
	}
	p := filepath.Join(t.TempDir(), "install.toml")
	if err := installmeta.Write(p, m); err != nil {
		t.Fatal(err)
	}
	back, err := installmeta.ReadTrusted(p)
	if err != nil {
		t.Fatal(err)
	}
	if back != want {
		t.Errorf("read back %+v, want %+v", back, want)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, %v; want 0644", fi.Mode(), err)
	}
}

func TestValidate(t *testing.T) {
	ok := Options{Owner: "dev"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(defaults) = %v", err)
	}
	bad := map[string]Options{
		"no owner":        {},
		"owner with /":    {Owner: "a/b"},
		"owner flag-like": {Owner: "-x"},
		"relative socket": {Owner: "dev", HelperSocket: "h.sock"},
		"long socket":     {Owner: "dev", HelperSocket: "/" + strings.Repeat("s", 110)},
		"socket in root":  {Owner: "dev", HelperSocket: "/h.sock"},
		"unclean meta":    {Owner: "dev", InstallMeta: "/etc//banger/install.toml"},
		"relative netns":  {Owner: "dev", Netns: "ns"},
		"relative state":  {Owner: "dev", HelperStateDir: "state"},
		"relative bindir": {Owner: "dev", BinDir: "bin"},
		"relative jails":  {Owner: "dev", JailBase: "jail"},
	}
	for name, o := range bad {
		t.Run(name, func(t *testing.T) {
			if err := o.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestCheckRoot(t *testing.T) {
	if err := checkRoot(0); err != nil {
		t.Errorf("checkRoot(0) = %v", err)
	}
	err := checkRoot(1000)
	if errdefs.Code(err) != errdefs.CodeBadRequest || !strings.Contains(err.Error(), "must run as root") {
		t.Errorf("checkRoot(1000) = %v (code %s)", err, errdefs.Code(err))
	}
}

func TestLookupOwnerRefusesRootAndUnknown(t *testing.T) {
	_, err := LookupOwner("root")
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "the owner must be a normal user") {
		t.Errorf("LookupOwner(root) = %v", err)
	}
	if _, err := LookupOwner("0"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("LookupOwner(0) = %v", err)
	}
	if _, err := LookupOwner("banger-no-such-user"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("LookupOwner(unknown) = %v", err)
	}
}

func TestSupervisorStopsInReverseOrderAndPrefixesOutput(t *testing.T) {
	lw := &lineWriter{w: &bytes.Buffer{}}
	s := &supervisor{log: lw, stopTimeout: 5 * time.Second}
	first, err := s.start("first", child(t, "term"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.start("second", child(t, "term"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Count(lw.String(), "world") == 2 })
	if err := s.stopAll(); err != nil {
		t.Fatalf("stopAll: %v", err)
	}
	if !first.exited() || !second.exited() || first.err != nil || second.err != nil {
		t.Errorf("children: first %v %v, second %v %v", first.exited(), first.err, second.exited(), second.err)
	}
	out := lw.String()
	for _, want := range []string{"first: hello\n", "first: world\n", "second: hello\n", "first: bye\n", "second: bye\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "second: bye") > strings.Index(out, "first: bye") {
		t.Errorf("second (started last) was not stopped first:\n%s", out)
	}
	if err := s.stopAll(); err != nil {
		t.Errorf("second stopAll: %v", err)
	}
}

func TestSupervisorKillsAfterTimeout(t *testing.T) {
	s := &supervisor{log: &lineWriter{w: &bytes.Buffer{}}, stopTimeout: 300 * time.Millisecond}
	p, err := s.start("deaf", child(t, "deaf"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let it install its signal disposition
	err = s.stopAll()
	if err == nil || !strings.Contains(err.Error(), "stop deaf: it did not exit within") {
		t.Errorf("stopAll = %v, want a kill report", err)
	}
	if !p.exited() {
		t.Error("child still running")
	}
}

func TestWaitReadyReportsEarlyExit(t *testing.T) {
	lw := &lineWriter{w: &bytes.Buffer{}}
	s := &supervisor{log: lw, stopTimeout: time.Second}
	p, err := s.start("helper", child(t, "die"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.waitReady(t.Context(), p, 10*time.Second, func(ctx context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "helper exited before it was ready: exit status 7") {
		t.Errorf("waitReady = %v", err)
	}
	waitFor(t, func() bool { return strings.Contains(lw.String(), "helper: boom\n") })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// String is what the log holds so far (its writer is a *bytes.Buffer).
func (l *lineWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.(*bytes.Buffer).String()
}
