package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/paths"
	"banger/internal/privop"
	"banger/internal/store"
	"banger/internal/vmm"
)

// fakeSnapshots keeps the snapshots it made; a "device" is a file holding
// the base's bytes.
type fakeSnapshots struct {
	mu        sync.Mutex
	dir       string
	live      map[string]bool
	calls     []string
	busyOnce  bool  // the next create answers busy (a stale snapshot)
	removeErr error // every remove fails with it
}

func (f *fakeSnapshots) CreateSnapshot(_ context.Context, id string, base, cow *os.File) (privop.CreateSnapshotResult, *os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mode := func(fl *os.File) string {
		v, _ := unix.FcntlInt(fl.Fd(), unix.F_GETFL, 0)
		return map[int]string{unix.O_RDONLY: "ro", unix.O_RDWR: "rw", unix.O_WRONLY: "wo"}[v&unix.O_ACCMODE]
	}
	f.calls = append(f.calls, fmt.Sprintf("create %s base=%s(%s) cow=%s(%s)", id, filepath.Base(base.Name()), mode(base), filepath.Base(cow.Name()), mode(cow)))
	if f.busyOnce || f.live[id] {
		f.busyOnce = false
		return privop.CreateSnapshotResult{}, nil, &privop.Error{Code: privop.CodeBusy, Message: "id in use"}
	}
	data, err := os.ReadFile(base.Name())
	if err != nil {
		return privop.CreateSnapshotResult{}, nil, err
	}
	dev := filepath.Join(f.dir, "dm-"+id)
	if err := os.WriteFile(dev, data, 0o600); err != nil {
		return privop.CreateSnapshotResult{}, nil, err
	}
	d, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return privop.CreateSnapshotResult{}, nil, err
	}
	f.live[id] = true
	return privop.CreateSnapshotResult{Name: "banger-" + id, Major: 253, Minor: 1, Sectors: uint64(len(data) / 512)}, d, nil
}

func (f *fakeSnapshots) RemoveSnapshot(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+id)
	if f.removeErr != nil {
		return f.removeErr
	}
	delete(f.live, id)
	return nil
}

func (f *fakeSnapshots) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, "\n")
}

// newDMService is a test service whose storage is dm, with one stopped VM
// made with it.
func newDMService(t *testing.T) (*Service, *fakeSnapshots, store.VM) {
	t.Helper()
	svc, st, l := newTestService(t)
	fake := &fakeSnapshots{dir: t.TempDir(), live: map[string]bool{}}
	svc.opts.Storage, svc.opts.Snapshots = image.StorageDM, fake
	// A base image of a few sectors with recognisable content.
	if err := os.WriteFile(filepath.Join(l.ImagesDir, "abc", rootfsFile), []byte(strings.Repeat("B", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	v := store.VM{ID: "s1", Name: "snappy", State: api.StateStopped, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x", VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	if err := st.CreateVM(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.VMDir(v.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := svc.makeRootCOW(v); err != nil {
		t.Fatal(err)
	}
	return svc, fake, v
}

func TestDMRootCOWFile(t *testing.T) {
	svc, _, v := newDMService(t)
	st, err := os.Stat(filepath.Join(svc.layout.VMDir(v.ID), paths.RootCOW))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != privop.SnapshotCOWSize(4096) || st.Mode().Perm() != 0o600 {
		t.Errorf("cow file: size %d mode %v", st.Size(), st.Mode())
	}
	if _, err := os.Stat(filepath.Join(svc.layout.VMDir(v.ID), paths.RootDisk)); !os.IsNotExist(err) {
		t.Errorf("a dm vm got a root disk file too: %v", err)
	}
	if !svc.usesSnapshot(v) || svc.View(v).RootDisk != api.RootDiskSnapshot {
		t.Errorf("the vm does not use a snapshot (view says %q)", svc.View(v).RootDisk)
	}
	if err := svc.makeRootCOW(v); err == nil {
		t.Error("a second cow file replaced the first")
	}
	if got := svc.View(store.VM{ID: "plain"}).RootDisk; got != api.RootDiskFile {
		t.Errorf("a vm without a cow file shows root disk %q", got)
	}
}

func TestDMRootDrive(t *testing.T) {
	svc, fake, v := newDMService(t)
	ctx := context.Background()
	d, err := svc.rootDrive(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	defer d.File.Close()
	if d.ID != "root" || d.Path != "/dev/mapper/banger-s1" || !d.Block || d.File == nil {
		t.Errorf("drive = %+v", d)
	}
	want := "create s1 base=" + rootfsFile + "(ro) cow=" + paths.RootCOW + "(rw)"
	if got := fake.log(); got != want {
		t.Errorf("calls:\n%s\nwant\n%s", got, want)
	}
	if err := svc.releaseRoot(ctx, v); err != nil {
		t.Fatal(err)
	}
	if fake.live["s1"] {
		t.Error("the snapshot outlived its release")
	}
}

// TestDMRootDriveReplacesStale: a snapshot left by a crash answers busy;
// the VM is not running, so it is removed and made again.
func TestDMRootDriveReplacesStale(t *testing.T) {
	svc, fake, v := newDMService(t)
	fake.busyOnce = true
	d, err := svc.rootDrive(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	d.File.Close()
	if got := fake.log(); strings.Count(got, "create s1") != 2 || !strings.Contains(got, "remove s1") {
		t.Errorf("calls:\n%s", got)
	}
}

func TestDMRootDriveWithoutHelper(t *testing.T) {
	svc, _, v := newDMService(t)
	svc.opts.Snapshots = nil
	_, err := svc.rootDrive(context.Background(), v)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "device-mapper snapshot") {
		t.Errorf("err = %v", err)
	}
	if err := svc.makeRootCOW(store.VM{ID: "other", ImageID: "abc"}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("cow without a helper: %v", err)
	}
}

func TestDMDelete(t *testing.T) {
	svc, fake, v := newDMService(t)
	ctx := context.Background()
	fake.removeErr = &privop.Error{Code: privop.CodeBusy, Message: "device busy"}
	if err := svc.Delete(ctx, v.Name); err == nil || !strings.Contains(err.Error(), "device busy") {
		t.Fatalf("delete with a busy snapshot = %v", err)
	}
	if !svc.usesSnapshot(v) {
		t.Fatal("the cow file went while its snapshot may still exist")
	}
	fake.removeErr = nil
	if err := svc.Delete(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(svc.layout.VMDir(v.ID)); !os.IsNotExist(err) {
		t.Errorf("vm dir left: %v", err)
	}
}

func TestDMCopyRoot(t *testing.T) {
	svc, fake, v := newDMService(t)
	out := filepath.Join(t.TempDir(), "copy.ext4")
	if err := svc.copyRoot(context.Background(), v, out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil || string(data) != strings.Repeat("B", 4096) {
		t.Errorf("copy = %q..., %v", data[:min(8, len(data))], err)
	}
	if fake.live["s1"] {
		t.Error("the snapshot made for the copy was left")
	}
}

func TestDoctorSnapshots(t *testing.T) {
	for _, tc := range []struct {
		ping privop.PingResult
		want string // "" for no line
	}{
		{privop.PingResult{}, ""},
		{privop.PingResult{Snapshots: true, SnapshotsActive: 2}, "ok snapshots: 2 active"},
		{privop.PingResult{Snapshots: true, SnapshotsActive: 1, SnapshotsStuck: []string{"vm2: removing: busy"}},
			"warn snapshots: 1 active; not torn down yet (the VM's next start or delete retries): vm2: removing: busy"},
	} {
		var got []string
		doctorSnapshots(tc.ping, func(name, status, format string, a ...any) {
			got = append(got, status+" "+name+": "+fmt.Sprintf(format, a...))
		})
		if want := tc.want; (want == "" && len(got) != 0) || (want != "" && (len(got) != 1 || got[0] != want)) {
			t.Errorf("doctor for %+v = %q, want %q", tc.ping, got, want)
		}
	}
}

// TestOverlayRoot: storage overlay gives a VM a qcow2 root over its image,
// booted as such, and a commit reads it whole.
func TestOverlayRoot(t *testing.T) {
	if ok, why := image.ProbeOverlay(); !ok {
		t.Skip(why)
	}
	svc, _, l := newTestService(t)
	svc.opts.Storage = image.StorageOverlay
	base := filepath.Join(l.ImagesDir, "abc", rootfsFile)
	if err := os.WriteFile(base, []byte(strings.Repeat("B", 8192)), 0o600); err != nil {
		t.Fatal(err)
	}
	v := store.VM{ID: "o1", Name: "over", ImageID: "abc"}
	if err := os.MkdirAll(l.VMDir(v.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := image.MakeOverlay(context.Background(), base, filepath.Join(l.VMDir(v.ID), paths.RootOverlay)); err != nil {
		t.Fatal(err)
	}
	if kind := svc.View(v).RootDisk; kind != api.RootDiskOverlay {
		t.Errorf("root disk %q", kind)
	}
	if ds, err := svc.diskStats(v); err != nil || len(ds) != 1 || ds[0].SizeBytes != 8192 || ds[0].File != paths.RootOverlay {
		t.Errorf("disk stats %+v, %v: want the root's virtual size, 8192", ds, err)
	}
	d, err := svc.rootDrive(context.Background(), v)
	if err != nil || d.Format != vmm.FormatQCOW2 || d.Path != filepath.Join(l.VMDir(v.ID), paths.RootOverlay) || d.File != nil {
		t.Errorf("drive %+v, %v", d, err)
	}
	out := filepath.Join(t.TempDir(), "commit.ext4")
	if err := svc.copyRoot(context.Background(), v, out); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != strings.Repeat("B", 8192) {
		t.Errorf("flattened root: %d bytes, %v", len(b), err)
	}
	if err := svc.releaseRoot(context.Background(), v); err != nil {
		t.Errorf("release of an overlay root: %v", err)
	}
}
