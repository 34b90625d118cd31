package vm

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agentclient"
	"banger/internal/agentclient/agenttest"
	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/paths"
	"banger/internal/store"
	"banger/internal/testutil"
	"banger/internal/vmm"
)

func TestParseStatusRSS(t *testing.T) {
	cases := []struct {
		name string
		text string
		want int64
		err  bool
	}{
		{name: "qemu", text: "Name:\tqemu-system-x86\nState:\tS (sleeping)\nVmPeak:\t 2000000 kB\nVmRSS:\t  319488 kB\nRssAnon:\t  300000 kB\nThreads:\t5\n", want: 319488 << 10},
		{name: "VmRSS first", text: "VmRSS: 4 kB\n", want: 4096},
		{name: "zombie has none", text: "Name:\tqemu\nState:\tZ (zombie)\nThreads:\t1\n", err: true},
		{name: "bad unit", text: "VmRSS: 4 MB\n", err: true},
		{name: "not a number", text: "VmRSS: many kB\n", err: true},
		{name: "negative", text: "VmRSS: -4 kB\n", err: true},
		{name: "empty", text: "", err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStatusRSS([]byte(c.text))
			if (err != nil) != c.err || got != c.want {
				t.Fatalf("parseStatusRSS = %d, %v; want %d, error %v", got, err, c.want, c.err)
			}
		})
	}
}

// sparseDisk makes a file of size bytes with only its first 64 KiB written.
func sparseDisk(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func statsVM(t *testing.T, st *store.Store, l paths.Layout, id, name, state string) store.VM {
	t.Helper()
	v := store.VM{ID: id, Name: name, State: state, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x",
		VCPU: 2, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	if err := st.CreateVM(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.VMDir(id), 0o700); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestStatsOfAStoppedVM(t *testing.T) {
	svc, st, l := newTestService(t)
	ctx := context.Background()
	statsVM(t, st, l, "s1", "idle", api.StateStopped)
	sparseDisk(t, filepath.Join(l.VMDir("s1"), paths.RootDisk), 1<<30)
	sparseDisk(t, filepath.Join(l.VMDir("s1"), paths.WorkDisk), 8<<30)
	got, err := svc.Stats(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "idle" || got.State != api.StateStopped || got.VCPU != 2 || got.MemoryMiB != 512 {
		t.Errorf("stats = %+v", got)
	}
	if got.Host != nil || got.Guest != nil || got.GuestError != "" {
		t.Errorf("a stopped vm has host %+v, guest %+v, guest error %q", got.Host, got.Guest, got.GuestError)
	}
	want := []struct {
		name, file string
		size       int64
	}{{"root", paths.RootDisk, 1 << 30}, {"work", paths.WorkDisk, 8 << 30}}
	if len(got.Disks) != len(want) {
		t.Fatalf("disks = %+v", got.Disks)
	}
	for i, w := range want {
		d := got.Disks[i]
		if d.Name != w.name || d.File != w.file || d.SizeBytes != w.size {
			t.Errorf("disk %d = %+v, want %s %s of %d bytes", i, d, w.name, w.file, w.size)
		}
		if d.AllocatedBytes < 64<<10 || d.AllocatedBytes > 4<<20 {
			t.Errorf("disk %s allocated %d bytes, want about the 64 KiB written", d.Name, d.AllocatedBytes)
		}
	}

	// With dm storage the root disk is the snapshot's COW file.
	statsVM(t, st, l, "s2", "snap", api.StateCreated)
	sparseDisk(t, filepath.Join(l.VMDir("s2"), paths.RootCOW), 1<<30)
	got, err = svc.Stats(ctx, "snap")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Disks) != 1 || got.Disks[0].Name != "root" || got.Disks[0].File != paths.RootCOW {
		t.Errorf("disks of a snapshot vm without a work disk = %+v, want only root.cow", got.Disks)
	}
}

func TestStatsErrors(t *testing.T) {
	svc, st, l := newTestService(t)
	ctx := context.Background()
	statsVM(t, st, l, "c1", "half", api.StateCreating)
	statsVM(t, st, l, "r1", "orphan", api.StateRunning)
	for _, tc := range []struct {
		ref string
		cat error
	}{
		{"nope", errdefs.ErrNotFound},
		{"half", errdefs.ErrConflict},
		{"orphan", errdefs.ErrUnavailable}, // running, but no VMM process tracked
	} {
		if _, err := svc.Stats(ctx, tc.ref); !errors.Is(err, tc.cat) {
			t.Errorf("stats %s: err = %v, want %v", tc.ref, err, tc.cat)
		}
	}
}

// runAsVM makes the test process the "VMM" of a running VM, with guest an
// agent session: the real /proc numbers of a live process, no VM needed.
func runAsVM(t *testing.T, svc *Service, id string, guest func(net.Conn)) {
	t.Helper()
	proc, err := vmm.NewProcess(vmm.Handle{VMM: "fake", PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	hostEnd, guestEnd := testutil.SocketPair(t)
	go func() {
		defer guestEnd.Close()
		guest(guestEnd)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := agentclient.Handshake(ctx, hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	svc.running[id] = &instance{id: id, proc: proc, sess: sess}
	svc.mu.Unlock()
}

func TestStatsOfARunningVM(t *testing.T) {
	svc, st, l := newTestService(t)
	ctx := context.Background()
	statsVM(t, st, l, "r1", "busy", api.StateRunning)
	sparseDisk(t, filepath.Join(l.VMDir("r1"), paths.RootDisk), 1<<30)
	sparseDisk(t, filepath.Join(l.VMDir("r1"), paths.WorkDisk), 1<<30)
	srv := &agent.Server{Mode: agent.ModeService, Version: "test"}
	runAsVM(t, svc, "r1", func(c net.Conn) { _ = srv.ServeConn(c) })

	// Burn some CPU so the counter moves between the samples.
	before, err := svc.Stats(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
	}
	after, err := svc.Stats(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	h := after.Host
	if h == nil || h.PID != os.Getpid() || h.RSSBytes <= 0 || h.UptimeSeconds <= 0 || h.CPUSeconds <= 0 {
		t.Fatalf("host = %+v", h)
	}
	if after.Host.UptimeSeconds < before.Host.UptimeSeconds || after.Host.CPUSeconds < before.Host.CPUSeconds {
		t.Errorf("counters went back: %+v then %+v", before.Host, after.Host)
	}
	g := after.Guest
	if g == nil || after.GuestError != "" {
		t.Fatalf("guest = %+v, error %q", g, after.GuestError)
	}
	if g.MemTotalBytes <= 0 || g.MemAvailableBytes > g.MemTotalBytes || g.Processes < 1 || len(g.Filesystems) != 2 {
		t.Errorf("guest = %+v", g)
	}
	if len(after.Disks) != 2 {
		t.Errorf("disks = %+v", after.Disks)
	}
}

// An agent from before the stats op costs the sample its guest part only.
func TestStatsWithAnOlderAgent(t *testing.T) {
	svc, st, l := newTestService(t)
	statsVM(t, st, l, "r1", "old", api.StateRunning)
	runAsVM(t, svc, "r1", agenttest.OlderAgent)
	got, err := svc.Stats(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	if got.Host == nil || got.Host.RSSBytes <= 0 {
		t.Errorf("host = %+v", got.Host)
	}
	if got.Guest != nil || !strings.Contains(got.GuestError, "predates the stats op") {
		t.Errorf("guest = %+v, error %q; want none, with the reason", got.Guest, got.GuestError)
	}
}

func TestStatsOfAVMMThatIsGone(t *testing.T) {
	svc, st, l := newTestService(t)
	statsVM(t, st, l, "r1", "ghost", api.StateRunning)
	srv := &agent.Server{Mode: agent.ModeService, Version: "test"}
	runAsVM(t, svc, "r1", func(c net.Conn) { _ = srv.ServeConn(c) })
	// A start time that is not the process's: its pid now names another.
	svc.running["r1"].proc.Handle.PIDStart++
	if _, err := svc.Stats(context.Background(), "ghost"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want unavailable", err)
	}
}
