package helper

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/dmsnap"
	"banger/internal/dmsnap/dmsnaptest"
	"banger/internal/privop"
	"banger/internal/testutil"
)

// snapHarness is a helper serving the snapshot ops over dmsnap's stateful
// fake; the "devices" it answers with are files standing in for dm nodes.
type snapHarness struct {
	*harness
	fake  *dmsnaptest.Fake
	m     *dmsnap.Manager
	jails *JailLedger
	dir   string
	// srvOpen, when set (before the server starts), replaces the test's
	// device opener.
	srvOpen func(path string, major, minor uint32, uuid string) (*os.File, error)
	logs    *testutil.SyncBuffer
}

func startSnapServer(t *testing.T, fake *dmsnaptest.Fake, state string) *snapHarness {
	t.Helper()
	return startSnapServerWith(t, &snapHarness{fake: fake}, state)
}

// startSnapServerWith starts h's server; h holds the fake and any opener.
func startSnapServerWith(t *testing.T, h *snapHarness, state string) *snapHarness {
	t.Helper()
	fake := h.fake
	h.dir, h.logs = shortDir(t), &testutil.SyncBuffer{}
	m, err := dmsnap.Open(dmsnap.Config{StateDir: state, Backend: fake, RemoveAttempts: 2, RemoveDelay: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h.m = m
	h.harness = startServer(t, func(c *Config) {
		c.Snapshots = m
		c.Log = slog.New(slog.NewTextHandler(h.logs, nil))
		jails, err := OpenJailLedger(c.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		c.Jails, h.jails = jails, jails
		c.OpenSnapshot = func(path string, major, minor uint32, uuid string) (*os.File, error) {
			if h.srvOpen != nil {
				return h.srvOpen(path, major, minor, uuid)
			}
			return os.Create(filepath.Join(h.dir, filepath.Base(path)))
		}
	})
	return h
}

// files makes a base image and a COW file owned by the owner, opened as
// bangerd would.
func (h *snapHarness) files(t *testing.T, id string, cowFlag int) (base, cow *os.File) {
	t.Helper()
	bp, cp := filepath.Join(h.dir, "base.img"), filepath.Join(h.dir, id+".cow")
	if err := os.WriteFile(bp, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cp, dmsnap.DefaultCOWSize(64<<10)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{bp, cp} {
		if err := os.Chown(p, h.owner, -1); err != nil && os.Getuid() == 0 {
			t.Fatal(err)
		}
	}
	base, err := os.Open(bp)
	if err != nil {
		t.Fatal(err)
	}
	cow, err = os.OpenFile(cp, cowFlag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close(); cow.Close() })
	return base, cow
}

func TestSnapshotOps(t *testing.T) {
	h := startSnapServer(t, dmsnaptest.NewFake(), shortDir(t))
	ctx := ctxT(t)
	ping, err := h.client.Ping(ctx)
	if err != nil || !ping.Snapshots || ping.SnapshotsOff != "" {
		t.Fatalf("ping = %+v, %v", ping, err)
	}
	base, cow := h.files(t, "vm1", os.O_RDWR)
	r, dev, err := h.client.CreateSnapshot(ctx, "vm1", base, cow)
	if err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if r.Name != "banger-vm1" || r.Major != 253 || r.Sectors != 128 {
		t.Errorf("result = %+v", r)
	}
	if !strings.Contains(h.fake.String(), "dm-0 banger-vm1") || !strings.Contains(h.fake.String(), "vm1.cow") {
		t.Errorf("fake state:\n%s", h.fake)
	}
	// One snapshot per VM at a time.
	if _, _, err := h.client.CreateSnapshot(ctx, "vm1", base, cow); err == nil {
		t.Error("a second snapshot of vm1 was made")
	} else {
		wantCode(t, err, privop.CodeBusy, "in use")
	}
	for range 2 { // idempotent
		if err := h.client.RemoveSnapshot(ctx, "vm1"); err != nil {
			t.Fatal(err)
		}
	}
	if s := h.fake.String(); s != "" {
		t.Errorf("left after remove:\n%s", s)
	}
	if !strings.Contains(h.logs.String(), "snapshot created") {
		t.Errorf("no log of the create:\n%s", h.logs)
	}
}

func TestSnapshotRefusals(t *testing.T) {
	h := startSnapServer(t, dmsnaptest.NewFake(), shortDir(t))
	ctx := ctxT(t)
	base, cow := h.files(t, "vm1", os.O_RDWR)
	_, roCOW := h.files(t, "vm2", os.O_RDONLY)
	notOwned, err := os.Open("/etc/passwd") // root's, not the owner's
	if err != nil {
		t.Fatal(err)
	}
	defer notOwned.Close()
	for _, tc := range []struct {
		name      string
		base, cow *os.File
		code      privop.Code
		msg       string
	}{
		{"base not the owner's", notOwned, cow, privop.CodeForbidden, "not banger's owner"},
		{"cow read-only", base, roCOW, privop.CodeForbidden, "want read-write"},
		{"cow is a directory", base, mustOpen(t, h.dir), privop.CodeForbidden, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dev, err := h.client.CreateSnapshot(ctx, "vm1", tc.base, tc.cow)
			if dev != nil {
				dev.Close()
			}
			wantCode(t, err, tc.code, tc.msg)
			if s := h.fake.String(); s != "" {
				t.Errorf("left:\n%s", s)
			}
		})
	}
	// Exactly two fds.
	if _, _, err := h.client.CallWithFiles(ctx, privop.CreateSnapshot{VMID: "vm1"}, []*os.File{base}); err == nil {
		t.Error("a create with one fd was served")
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestSnapshotOpsUnavailable(t *testing.T) {
	h := startServer(t, func(c *Config) { c.SnapshotsOff = "/dev/mapper/control missing" })
	ctx := ctxT(t)
	ping, err := h.client.Ping(ctx)
	if err != nil || ping.Snapshots || ping.SnapshotsOff != "/dev/mapper/control missing" {
		t.Fatalf("ping = %+v, %v", ping, err)
	}
	wantCode(t, h.client.RemoveSnapshot(ctx, "vm1"), privop.CodeNotFound, "/dev/mapper/control missing")
}

// TestSnapshotReconcileAtStart: a device the kernel lost while the helper
// was down (a reboot) is reported and its entry dropped before serving.
func TestSnapshotReconcileAtStart(t *testing.T) {
	fake, state := dmsnaptest.NewFake(), shortDir(t)
	first := startSnapServer(t, fake, state)
	base, cow := first.files(t, "vm1", os.O_RDWR)
	_, dev, err := first.client.CreateSnapshot(ctxT(t), "vm1", base, cow)
	if err != nil {
		t.Fatal(err)
	}
	dev.Close()
	e, _ := first.m.Get("vm1")
	if err := fake.RemoveDM(context.Background(), e.UUID); err != nil {
		t.Fatal(err)
	}
	// The journal is locked per state dir: release it as a stopped helper would.
	first.m.Close()
	second := startSnapServer(t, fake, state)
	if _, err := second.client.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if logs := second.logs.String(); !strings.Contains(logs, "entry vm1 (active): active but its dm device is gone") {
		t.Errorf("reconcile not reported:\n%s", logs)
	}
	if s := fake.String(); s != "" {
		t.Errorf("left after reconcile:\n%s", s)
	}
}

func TestSnapshotLimit(t *testing.T) {
	old := MaxSnapshots
	MaxSnapshots = 1
	t.Cleanup(func() { MaxSnapshots = old })
	h := startSnapServer(t, dmsnaptest.NewFake(), shortDir(t))
	ctx := ctxT(t)
	h.create(t, "vm1")
	base2, cow2 := h.files(t, "vm2", os.O_RDWR)
	_, _, err := h.client.CreateSnapshot(ctx, "vm2", base2, cow2)
	wantCode(t, err, privop.CodeBusy, "1 snapshots exist")
	if err := h.client.RemoveSnapshot(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	_, dev, err := h.client.CreateSnapshot(ctx, "vm2", base2, cow2)
	if err != nil {
		t.Fatalf("after a remove: %v", err)
	}
	dev.Close()
}

// TestSnapshotRemoveWaitsForTheJail: a recorded jail may hold a node of
// the device, so its snapshot stays until the jail is cleaned up.
func TestSnapshotRemoveWaitsForTheJail(t *testing.T) {
	h := startSnapServer(t, dmsnaptest.NewFake(), shortDir(t))
	ctx := ctxT(t)
	h.create(t, "vm1")
	if _, err := h.jails.add("vm1", JailEntry{ExecName: "firecracker"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, h.client.RemoveSnapshot(ctx, "vm1"), privop.CodeBusy, "still has a firecracker jail")
	if !strings.Contains(h.fake.String(), "dm-0 banger-vm1") {
		t.Fatalf("the snapshot went while its jail is recorded:\n%s", h.fake)
	}
	if err := h.jails.remove("vm1"); err != nil {
		t.Fatal(err)
	}
	if err := h.client.RemoveSnapshot(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotOpenRefused: a device that does not check out (another
// device took the number, a swapped node) is never handed out, and the
// snapshot is undone.
func TestSnapshotOpenRefused(t *testing.T) {
	h := startSnapServerWith(t, &snapHarness{fake: dmsnaptest.NewFake(), srvOpen: func(string, uint32, uint32, string) (*os.File, error) {
		return nil, errors.New("uuid mismatch")
	}}, shortDir(t))
	ctx := ctxT(t)
	base, cow := h.files(t, "vm1", os.O_RDWR)
	_, dev, err := h.client.CreateSnapshot(ctx, "vm1", base, cow)
	if dev != nil || err == nil || !strings.Contains(err.Error(), "uuid mismatch") {
		t.Fatalf("create = %v, %v", dev, err)
	}
	if s := h.fake.String(); s != "" {
		t.Errorf("left:\n%s", s)
	}
}

// TestSnapshotPingCounts: ping says how many snapshots run and which are
// stuck (here one whose device stays busy), for doctor.
func TestSnapshotPingCounts(t *testing.T) {
	h := startSnapServer(t, dmsnaptest.NewFake(), shortDir(t))
	ctx := ctxT(t)
	h.create(t, "vm1")
	h.create(t, "vm2")
	h.fake.SetBusy("banger-vm2", 1000)
	if err := h.client.RemoveSnapshot(ctx, "vm2"); err == nil {
		t.Fatal("a busy device was removed")
	}
	p, err := h.client.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.SnapshotsActive != 1 || len(p.SnapshotsStuck) != 1 || !strings.HasPrefix(p.SnapshotsStuck[0], "vm2: removing: ") {
		t.Errorf("ping: active %d, stuck %q", p.SnapshotsActive, p.SnapshotsStuck)
	}
}

// create makes id's snapshot from fresh files and closes the device.
func (h *snapHarness) create(t *testing.T, id string) {
	t.Helper()
	base, cow := h.files(t, id, os.O_RDWR)
	_, dev, err := h.client.CreateSnapshot(ctxT(t), id, base, cow)
	if err != nil {
		t.Fatal(err)
	}
	dev.Close()
}
