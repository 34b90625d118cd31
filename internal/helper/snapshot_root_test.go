package helper

// The snapshot ops against the real kernel, with the helper a separate
// process that is SIGKILLed half-way through a create and started again.
// It needs root, loop devices and device-mapper, so on hosts without dm
// it runs inside a banger guest (test/e2e TestGuestDMHelper).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/dmsnap"
	"banger/internal/privop/client"
	"banger/internal/testutil"
)

const (
	stateEnv = "BANGER_HELPER_TEST_STATE"
	pauseEnv = "BANGER_HELPER_TEST_PAUSE"
	// dmOwner owns the test's base and COW files, as bangerd's owner would.
	dmOwner = 4242
)

// pausingBackend stops the helper for good right after one step of a
// create, so the test can kill it there: "base-loop" and "cow-loop" after
// the loops are attached, "dm-create" once the dm device exists.
type pausingBackend struct {
	dmsnap.Backend
	at      string
	mu      sync.Mutex
	attachs int
}

func (p *pausingBackend) pause(point string) {
	if point == p.at {
		fmt.Println("PAUSED", point)
		select {}
	}
}

func (p *pausingBackend) AttachLoop(ctx context.Context, f *os.File, ro bool) (dmsnap.Loop, io.Closer, error) {
	l, c, err := p.Backend.AttachLoop(ctx, f, ro)
	if err == nil {
		p.mu.Lock()
		p.attachs++
		n := p.attachs
		p.mu.Unlock()
		p.pause(map[int]string{1: "base-loop", 2: "cow-loop"}[n])
	}
	return l, c, err
}

func (p *pausingBackend) CreateDM(ctx context.Context, name, uuid string, table []dmsnap.Target) (dmsnap.DMDevice, error) {
	d, err := p.Backend.CreateDM(ctx, name, uuid, table)
	if err == nil {
		p.pause("dm-create")
	}
	return d, err
}

// runDMHelper is the child: a helper serving the snapshot ops on the real
// kernel until SIGTERM (or its SIGKILL).
func runDMHelper() int {
	state, sock := os.Getenv(stateEnv), os.Getenv(sockEnv)
	var b dmsnap.Backend = dmsnap.NewIoctlBackend()
	if at := os.Getenv(pauseEnv); at != "" {
		b = &pausingBackend{Backend: b, at: at}
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "dmhelper:", err)
		return 1
	}
	m, err := dmsnap.Open(dmsnap.Config{StateDir: state, Backend: b})
	if err != nil {
		return fail(err)
	}
	defer m.Close()
	ledger, err := OpenLedger(state)
	if err != nil {
		return fail(err)
	}
	srv, err := NewServer(Config{
		Net: newFakeNet(state), Ledger: ledger, OwnerUID: dmOwner, OwnerGID: dmOwner, StateDir: state,
		Resolver: &fakeResolver{reason: "test"}, Snapshots: m, Version: "test",
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return fail(err)
	}
	ln, err := Listen(sock, dmOwner)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fmt.Println("READY")
	if err := srv.Serve(ctx, ln); err != nil {
		return fail(err)
	}
	return 0
}

// dmHelper is a running child helper.
type dmHelper struct {
	cmd    *exec.Cmd
	lines  chan string // stdout
	stderr *testutil.SyncBuffer
}

func startDMHelper(t *testing.T, sock, state, pause string) *dmHelper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = []string{childEnv + "=dmhelper", sockEnv + "=" + sock, stateEnv + "=" + state, pauseEnv + "=" + pause, "PATH=/usr/bin:/bin"}
	h := &dmHelper{cmd: cmd, lines: make(chan string, 16), stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = h.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	h.await(t, "READY")
	return h
}

func (h *dmHelper) await(t *testing.T, line string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper exited before %q; stderr:\n%s", line, h.stderr)
			}
			if l == line {
				return
			}
		case <-deadline:
			t.Fatalf("helper did not print %q in 60 s; stderr:\n%s", line, h.stderr)
		}
	}
}

func (h *dmHelper) stop(t *testing.T) {
	t.Helper()
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	if err := h.cmd.Wait(); err != nil {
		t.Errorf("helper exit: %v\n%s", err, h.stderr)
	}
}

// dmFiles makes a 16 MiB base image with a pattern and a sparse COW file,
// both the owner's, and opens them as bangerd would.
func dmFiles(t *testing.T, dir string) (base, cow *os.File, pattern []byte) {
	t.Helper()
	pattern = bytes.Repeat([]byte("banger base block "), 4096/18+1)[:4096]
	bp, cp := filepath.Join(dir, "base.img"), filepath.Join(dir, "vm.cow")
	if err := os.WriteFile(bp, bytes.Repeat(pattern, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cp, dmsnap.DefaultCOWSize(16<<20)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{bp, cp} {
		if err := os.Chown(p, dmOwner, dmOwner); err != nil {
			t.Fatal(err)
		}
	}
	if base, err := os.Open(bp); err != nil {
		t.Fatal(err)
	} else if cow, err = os.OpenFile(cp, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	} else {
		t.Cleanup(func() { base.Close(); cow.Close() })
		return base, cow, pattern
	}
	return nil, nil, nil
}

// journalStates reads the helper's snapshot journal: id → state.
func journalStates(t *testing.T, state string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(state, dmsnap.JournalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Devices map[string]struct {
			State string `json:"state"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for id, e := range doc.Devices {
		out[id] = e.State
	}
	return out
}

// kernelResidue lists banger dm devices and loops bound to files.
func kernelResidue(t *testing.T, files ...*os.File) []string {
	t.Helper()
	ctx := context.Background()
	b := dmsnap.NewIoctlBackend()
	var out []string
	dms, err := b.DMDevices(ctx, dmsnap.NamePrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dms {
		out = append(out, "dm "+d.Name)
	}
	loops, err := b.Loops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range loops {
		for _, f := range files {
			var st syscall.Stat_t
			if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			if l.BackingIno == st.Ino || l.Backing == f.Name() {
				out = append(out, "loop "+l.Path+" on "+f.Name())
			}
		}
	}
	return out
}

// waitNoResidue gives autoclear a few seconds to finish, then returns
// what is left.
func waitNoResidue(t *testing.T, files ...*os.File) []string {
	t.Helper()
	for i := 0; ; i++ {
		r := kernelResidue(t, files...)
		if len(r) == 0 || i == 50 {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSnapshotHelperCrash kills the helper (SIGKILL) after each step of a
// create, starts it again and checks that its start-up reconcile reports
// the half-made snapshot and leaves nothing in the kernel or the journal;
// then the same VM's snapshot is made, written and removed normally.
func TestSnapshotHelperCrash(t *testing.T) {
	testutil.RequireRoot(t)
	if err := dmsnap.Probe(); err != nil {
		if os.Getenv("BANGER_TEST_DM") == "1" {
			t.Fatalf("BANGER_TEST_DM=1 but %v", err)
		}
		t.Skipf("needs device-mapper: %v (runs in a guest: make e2e-dm)", err)
	}
	// Loops with autoclear go when their last user closes them, which the
	// kernel may finish just after the kill or the dm removal: the report
	// may or may not list them.
	for _, tc := range []struct{ point, removed string }{
		{"base-loop", `removed \[(loop [^]]*)?\]`},
		{"cow-loop", `removed \[(loop [^]]*)?\]`},
		{"dm-create", `removed \[dm banger-crashvm(, loop [^]]*)?\]`},
	} {
		t.Run(tc.point, func(t *testing.T) {
			dir := shortDir(t)
			state, sock := filepath.Join(dir, "state"), filepath.Join(dir, "run", "helper.sock")
			if err := PrepareStateDir(state); err != nil {
				t.Fatal(err)
			}
			base, cow, pattern := dmFiles(t, dir)
			c := &client.Client{Socket: sock}

			first := startDMHelper(t, sock, state, tc.point)
			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				_, dev, err := c.CreateSnapshot(ctx, "crashvm", base, cow)
				if dev != nil {
					dev.Close()
				}
				done <- err
			}()
			first.await(t, "PAUSED "+tc.point)
			if got := journalStates(t, state); got["crashvm"] != "creating" {
				t.Fatalf("journal before the kill: %v", got)
			}
			if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = first.cmd.Wait()
			if err := <-done; err == nil {
				t.Fatal("the create answered although the helper was killed")
			}

			second := startDMHelper(t, sock, state, "")
			if _, err := c.Ping(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			want := regexp.MustCompile(`entry crashvm \(creating\): interrupted while creating; ` + tc.removed + `; dropped`)
			if logs := second.stderr.String(); !want.MatchString(logs) {
				t.Errorf("reconcile did not report %q:\n%s", want, logs)
			}
			if j := journalStates(t, state); len(j) != 0 {
				t.Errorf("journal after reconcile: %v", j)
			}
			if r := waitNoResidue(t, base, cow); len(r) != 0 {
				t.Errorf("left in the kernel after reconcile: %v", r)
			}

			// The id is free again and the snapshot works: a write lands
			// in the COW file, never in the base.
			r, dev, err := c.CreateSnapshot(ctxT(t), "crashvm", base, cow)
			if err != nil {
				t.Fatal(err)
			}
			if r.Sectors != 16<<20/512 {
				t.Errorf("sectors = %d", r.Sectors)
			}
			block := bytes.Repeat([]byte{0xab}, 4096)
			if _, err := dev.WriteAt(block, 8192); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4096)
			if err := dev.Sync(); err != nil {
				t.Fatal(err)
			}
			if _, err := dev.ReadAt(got, 8192); err != nil || !bytes.Equal(got, block) {
				t.Errorf("read back through the snapshot: %v", err)
			}
			dev.Close()
			if _, err := base.ReadAt(got, 8192); err != nil || !bytes.Equal(got, pattern) {
				t.Errorf("the base changed: %v", err)
			}
			if err := c.RemoveSnapshot(ctxT(t), "crashvm"); err != nil {
				t.Fatal(err)
			}
			second.stop(t)
			if r := waitNoResidue(t, base, cow); len(r) != 0 {
				t.Errorf("left in the kernel at the end: %v", r)
			}
		})
	}
}
