package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/errdefs"
	"banger/internal/paths"
	"banger/internal/store"
	"banger/internal/vmm"
)

// fakeDriver records what the service asks of a VMM; no process runs.
type fakeDriver struct {
	adopted []int
}

func (f *fakeDriver) Name() string { return "fake" }
func (f *fakeDriver) Probe(context.Context) vmm.Probe {
	return vmm.Probe{Available: true, Accel: "tcg", Reason: "fake"}
}
func (f *fakeDriver) Start(context.Context, vmm.Spec) (*vmm.Process, error) {
	return nil, errors.New("fake driver cannot start VMs")
}
func (f *fakeDriver) Adopt(h vmm.Handle) (*vmm.Process, error) {
	f.adopted = append(f.adopted, h.PID)
	return nil, vmm.ErrGone
}

func newTestService(t *testing.T) (*Service, *store.Store, paths.Layout) {
	return newTestServiceWith(t, nil)
}

// newTestServiceWith is newTestService with edit applied to the options
// (dir is the test's scratch directory).
func newTestServiceWith(t *testing.T, edit func(o *Options, dir string)) (*Service, *store.Store, paths.Layout) {
	t.Helper()
	dir := t.TempDir()
	l := paths.New(filepath.Join(dir, "c"), filepath.Join(dir, "s"), filepath.Join(dir, "k"), filepath.Join(dir, "r"))
	if err := l.EnsureDaemonDirs(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(l.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, _ := config.Parse("test", nil)
	o := Options{Store: st, Layout: l, Config: cfg, Host: config.Host{CPUs: 2, MemoryMiB: 4096}, Driver: &fakeDriver{}}
	if edit != nil {
		edit(&o, dir)
	}
	svc, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	// An image and a kernel that exist on disk, so planning can succeed.
	if err := os.MkdirAll(filepath.Join(l.ImagesDir, "abc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.ImagesDir, "abc", rootfsFile), []byte("ext4"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.PutImage(context.Background(), store.Image{Name: "img", ID: "abc", CreatedAt: time.Now()}, false); err != nil {
		t.Fatal(err)
	}
	return svc, st, l
}

func TestPlanRejectsBadInput(t *testing.T) {
	svc, st, _ := newTestService(t)
	ctx := context.Background()
	if err := st.CreateVM(ctx, store.VM{ID: "1", Name: "taken", State: api.StateStopped, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x", VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  api.CreateVMRequest
		cat  error
		want string
	}{
		{"bad name", api.CreateVMRequest{Name: "Bad_Name", Image: "img"}, errdefs.ErrInvalid, "Bad_Name"},
		{"zero vcpu", api.CreateVMRequest{VCPU: 0, VCPUSet: true, Image: "img"}, errdefs.ErrInvalid, "--vcpu"},
		{"zero memory", api.CreateVMRequest{MemoryMiB: 0, MemorySet: true, Image: "img"}, errdefs.ErrInvalid, "--memory"},
		{"tiny memory", api.CreateVMRequest{MemoryMiB: 64, Image: "img"}, errdefs.ErrInvalid, "--memory"},
		{"bad disk", api.CreateVMRequest{DiskSize: "huge", Image: "img"}, errdefs.ErrInvalid, "huge"},
		{"tiny disk", api.CreateVMRequest{DiskSize: "1M", Image: "img"}, errdefs.ErrInvalid, "16M"},
		{"unknown image", api.CreateVMRequest{Image: "nope"}, errdefs.ErrNotFound, "nope"},
		{"missing kernel", api.CreateVMRequest{Image: "img", Kernel: "nokernel"}, errdefs.ErrNotFound, "nokernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := svc.plan(ctx, tc.req, nil)
			if !errors.Is(err, tc.cat) {
				t.Fatalf("err = %v, want category %v", err, tc.cat)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	vms, _ := st.ListVMs(ctx)
	if len(vms) != 1 {
		t.Fatalf("bad input created VMs: %d records", len(vms))
	}
}

func TestReconcileMarksVanishedVMsStopped(t *testing.T) {
	svc, st, l := newTestService(t)
	ctx := context.Background()
	base := store.VM{ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x", VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	running := base
	running.ID, running.Name, running.State = "r1", "gone", api.StateRunning
	running.Runtime = store.Runtime{VMM: "fake", PID: 424242, PIDStart: 7, RunDir: l.VMRun("r1")}
	stopped := base
	stopped.ID, stopped.Name, stopped.State = "s1", "idle", api.StateStopped
	half := base
	half.ID, half.Name, half.State = "c1", "half", api.StateCreating
	for _, v := range []store.VM{running, stopped, half} {
		if err := st.CreateVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(l.VMRun("r1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.VMDir("c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetVM(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateStopped || got.Runtime.PID != 0 {
		t.Fatalf("vanished vm: state %q pid %d, want stopped with no handle", got.State, got.Runtime.PID)
	}
	if _, err := os.Stat(l.VMRun("r1")); !os.IsNotExist(err) {
		t.Fatalf("runtime dir of vanished vm still exists: %v", err)
	}
	if f := svc.driver.(*fakeDriver); len(f.adopted) != 1 || f.adopted[0] != 424242 {
		t.Fatalf("adopt calls = %v, want exactly the running vm's pid", f.adopted)
	}
	if _, err := st.GetVM(ctx, "half"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("interrupted create still recorded: %v", err)
	}
	if _, err := os.Stat(l.VMDir("c1")); !os.IsNotExist(err) {
		t.Fatalf("interrupted create left its dir: %v", err)
	}
	if idle, _ := st.GetVM(ctx, "idle"); idle.State != api.StateStopped {
		t.Fatalf("stopped vm changed to %q", idle.State)
	}
}

func TestDeleteStoppedVMRemovesDirAndIsNotFoundAfter(t *testing.T) {
	svc, st, l := newTestService(t)
	ctx := context.Background()
	v := store.VM{ID: "d1", Name: "doomed", State: api.StateStopped, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x", VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	if err := st.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.VMDir("d1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.VMDir("d1")); !os.IsNotExist(err) {
		t.Fatalf("vm dir still exists: %v", err)
	}
	if err := svc.Delete(ctx, "doomed"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete = %v, want not found", err)
	}
}

func TestSetRefusesRunningAndShrink(t *testing.T) {
	svc, st, _ := newTestService(t)
	ctx := context.Background()
	v := store.VM{ID: "x1", Name: "busy", State: api.StateRunning, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x", VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	if err := st.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	two := 2
	if _, err := svc.Set(ctx, "busy", api.SetVMRequest{VCPU: &two}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("set on running vm = %v, want conflict", err)
	}
	v.State = api.StateStopped
	if err := st.UpdateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	small := "512M"
	if _, err := svc.Set(ctx, "busy", api.SetVMRequest{DiskSize: &small}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("shrinking set = %v, want invalid", err)
	}
	got, err := svc.Set(ctx, "busy", api.SetVMRequest{VCPU: &two})
	if err != nil || got.VCPU != 2 {
		t.Fatalf("set vcpu = %+v, %v", got, err)
	}
}

// otherDriver is a second fake VMM that also holds something per VM.
type otherDriver struct {
	fakeDriver
	released []string
}

func (o *otherDriver) Name() string { return "other" }
func (o *otherDriver) Release(_ context.Context, h vmm.Handle, _ string) error {
	o.released = append(o.released, h.JailID)
	return nil
}

// A VM started by a driver that is no longer the chosen one (vmm changed
// in the config) is still adopted, and released, through that driver.
func TestReconcileUsesTheVMsOwnDriver(t *testing.T) {
	svc, st, l := newTestService(t)
	other := &otherDriver{}
	svc.opts.OtherDrivers = []vmm.Driver{other}
	ctx := context.Background()
	v := store.VM{ID: "o1", Name: "old", State: api.StateRunning, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x",
		VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now(),
		Runtime: store.Runtime{VMM: "other", PID: 434343, PIDStart: 7, RunDir: l.VMRun("o1"), JailID: "o1"}}
	if err := st.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(other.adopted) != 1 || other.adopted[0] != 434343 {
		t.Errorf("other driver adopt calls = %v, want the VM's pid", other.adopted)
	}
	if f := svc.driver.(*fakeDriver); len(f.adopted) != 0 {
		t.Errorf("the active driver was asked to adopt %v", f.adopted)
	}
	if len(other.released) != 1 || other.released[0] != "o1" {
		t.Errorf("released = %v, want the VM's jail", other.released)
	}
}
