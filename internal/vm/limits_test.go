package vm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/agentclient"
	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/store"
	"banger/internal/testutil"
	"banger/internal/vmm"
)

// limitedDriver is a fake VMM with limits and a stated power-off
// behaviour, which counts the VMs it is asked to start.
type limitedDriver struct {
	fakeDriver
	lim          vmm.Limits
	powerOffEnds bool
	starts       int
}

func (d *limitedDriver) Name() string          { return "fclike" }
func (d *limitedDriver) Limits() vmm.Limits    { return d.lim }
func (d *limitedDriver) PowerOffEndsVMM() bool { return d.powerOffEnds }
func (d *limitedDriver) Start(context.Context, vmm.Spec) (*vmm.Process, error) {
	d.starts++
	return nil, errors.New("fake driver cannot start VMs")
}

// limitedService is a test service on a limitedDriver, with a default
// kernel on record, so that a create the limits let through goes on to
// make the VM.
func limitedService(t *testing.T, lim vmm.Limits) (*Service, *store.Store, *limitedDriver) {
	t.Helper()
	svc, st, _ := newTestService(t)
	d := &limitedDriver{lim: lim}
	svc.driver = d
	id := strings.Repeat("ab", 32)
	dir := filepath.Join(svc.layout.KernelsDir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"manifest.json": `{"id":"` + id + `"}`, "vmlinux": "ELF"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PutKernel(context.Background(), store.Kernel{Name: svc.cfg.DefaultKernelName, ID: id, CreatedAt: time.Now()}, false); err != nil {
		t.Fatal(err)
	}
	return svc, st, d
}

// wantLimitError checks err refuses a size as bad input and names the VMM,
// the limit and the value.
func wantLimitError(t *testing.T, err error, words ...string) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("err = %v, want a bad request", err)
		return
	}
	for _, w := range append([]string{"fclike"}, words...) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %q, want it to name %q", err, w)
		}
	}
}

// nothingCreated checks a refused create left no VM record and no VM dir.
func nothingCreated(t *testing.T, svc *Service, st *store.Store) {
	t.Helper()
	if vms, _ := st.ListVMs(context.Background()); len(vms) != 0 {
		t.Errorf("a refused create recorded %d VMs", len(vms))
	}
	if ents, _ := os.ReadDir(svc.layout.VMsDir); len(ents) != 0 {
		t.Errorf("a refused create left VM dirs: %d", len(ents))
	}
	if ents, _ := os.ReadDir(svc.layout.VMRunDir); len(ents) != 0 {
		t.Errorf("a refused create left runtime dirs: %d", len(ents))
	}
}

func TestCreateRefusesSizesOverTheVMMLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   api.CreateVMRequest
		words []string
	}{
		{"vcpu", api.CreateVMRequest{Image: "img", VCPU: 33, VCPUSet: true, NoStart: true}, []string{"--vcpu", "32", "33"}},
		{"memory", api.CreateVMRequest{Image: "img", MemoryMiB: 4097, MemorySet: true, NoStart: true}, []string{"--memory", "4096", "4097"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, st, d := limitedService(t, vmm.Limits{MaxVCPU: 32, MaxMemMiB: 4096})
			_, err := svc.Create(context.Background(), tc.req, nil)
			wantLimitError(t, err, tc.words...)
			nothingCreated(t, svc, st)
			if d.starts != 0 {
				t.Errorf("the VMM was started %d times", d.starts)
			}
		})
	}
}

func TestCreateTakesSizesAtTheVMMLimits(t *testing.T) {
	svc, st, _ := limitedService(t, vmm.Limits{MaxVCPU: 32, MaxMemMiB: 4096})
	v, err := svc.Create(context.Background(), api.CreateVMRequest{Image: "img", VCPU: 32, MemoryMiB: 4096, NoStart: true}, nil)
	if err != nil {
		t.Fatalf("create at the limits: %v", err)
	}
	if got, err := st.GetVM(context.Background(), v.Name); err != nil || got.VCPU != 32 || got.MemoryMiB != 4096 {
		t.Fatalf("created vm = %+v, %v", got, err)
	}
}

func TestCreateNamesTheDefaultOverTheVMMLimit(t *testing.T) {
	svc, st, _ := limitedService(t, vmm.Limits{MaxVCPU: 32})
	svc.defaults.VCPU.Value, svc.defaults.VCPU.Why = 40, "vm_defaults.vcpu"
	_, err := svc.Create(context.Background(), api.CreateVMRequest{Image: "img", NoStart: true}, nil)
	wantLimitError(t, err, "vm_defaults.vcpu", "32", "40")
	nothingCreated(t, svc, st)
}

func TestSetRefusesSizesOverTheVMMLimits(t *testing.T) {
	svc, st, _ := limitedService(t, vmm.Limits{MaxVCPU: 32})
	ctx := context.Background()
	v := store.VM{ID: "l1", Name: "small", State: api.StateStopped, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x",
		VCPU: 2, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	if err := st.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	n := 33
	_, err := svc.Set(ctx, "small", api.SetVMRequest{VCPU: &n})
	wantLimitError(t, err, "--vcpu", "32", "33")
	if got, _ := st.GetVM(ctx, "small"); got.VCPU != 2 {
		t.Errorf("a refused set changed vcpu to %d", got.VCPU)
	}
	n = 32
	if got, err := svc.Set(ctx, "small", api.SetVMRequest{VCPU: &n}); err != nil || got.VCPU != 32 {
		t.Fatalf("set at the limit = %+v, %v", got, err)
	}
}

// A VM sized for another VMM is refused at start, before anything is made
// for it, and stays as it was.
func TestStartRefusesSizesOverTheVMMLimits(t *testing.T) {
	svc, st, d := limitedService(t, vmm.Limits{MaxVCPU: 32})
	ctx := context.Background()
	v := store.VM{ID: "l2", Name: "big", State: api.StateStopped, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x",
		VCPU: 48, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now()}
	if err := st.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Start(ctx, "big", nil)
	wantLimitError(t, err, "32", "48", "vm set big --vcpu")
	got, _ := st.GetVM(ctx, "big")
	if got.State != api.StateStopped || got.LastError != "" {
		t.Errorf("after a refused start: state %q, last error %q; want it unchanged", got.State, got.LastError)
	}
	if d.starts != 0 {
		t.Errorf("the VMM was started %d times", d.starts)
	}
	if _, err := os.Stat(svc.layout.VMRun("l2")); !os.IsNotExist(err) {
		t.Errorf("a refused start made the runtime dir (%v)", err)
	}
}

// Stop asks the guest to power off when that ends the VMM, and to reboot
// when the VMM outlives a power-off (Firecracker), so the stop does not
// wait for ShutdownTimeout. The fake VMM is a process that, like
// Firecracker, exits on a guest reboot and keeps running on a power-off.
func TestStopAsksForWhatEndsTheVMM(t *testing.T) {
	old := ShutdownTimeout
	ShutdownTimeout = 3 * time.Second
	t.Cleanup(func() { ShutdownTimeout = old })
	for _, tc := range []struct {
		name         string
		powerOffEnds bool
	}{
		{"vmm exits on power-off", true},
		{"vmm exits only on reboot", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, st, d := limitedService(t, vmm.Limits{})
			d.powerOffEnds = tc.powerOffEnds
			ctx := context.Background()

			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(waited) }()
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-waited })
			proc, err := vmm.NewProcess(vmm.Handle{VMM: d.Name(), PID: cmd.Process.Pid})
			if err != nil {
				t.Fatal(err)
			}

			asked := make(chan bool, 1)
			hostEnd, guestEnd := testutil.SocketPair(t)
			srv := &agent.Server{Mode: agent.ModeService, Version: "test", Shutdown: func(reboot bool) {
				asked <- reboot
				if reboot || tc.powerOffEnds {
					_ = cmd.Process.Kill() // the VMM ends
				}
			}}
			served := make(chan struct{})
			go func() { defer close(served); defer guestEnd.Close(); _ = srv.ServeConn(guestEnd) }()
			t.Cleanup(func() { <-served })
			sess, err := agentclient.Handshake(ctx, hostEnd)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sess.Close() })

			v := store.VM{ID: "s1", Name: "runs", State: api.StateRunning, ImageName: "img", ImageID: "abc", KernelName: "k", KernelID: "x",
				VCPU: 1, MemoryMiB: 512, DiskSize: 1 << 30, CreatedAt: time.Now(),
				Runtime: store.Runtime{VMM: d.Name(), PID: cmd.Process.Pid, PIDStart: proc.Handle.PIDStart}}
			if err := st.CreateVM(ctx, v); err != nil {
				t.Fatal(err)
			}
			in := &instance{id: v.ID, name: v.Name, proc: proc, sess: sess}
			svc.mu.Lock()
			svc.running[v.ID] = in
			svc.mu.Unlock()

			start := time.Now()
			got, err := svc.Stop(ctx, "runs")
			took := time.Since(start)
			if err != nil || got.State != api.StateStopped {
				t.Fatalf("stop = %+v, %v", got, err)
			}
			select {
			case reboot := <-asked:
				if reboot == tc.powerOffEnds {
					t.Errorf("the guest was asked reboot=%v", reboot)
				}
			default:
				t.Fatal("the guest was never asked to shut down")
			}
			if took >= ShutdownTimeout {
				t.Errorf("stop took %s: it waited for the shutdown timeout (%s)", took, ShutdownTimeout)
			}
			svc.mu.Lock()
			delete(svc.running, v.ID)
			svc.mu.Unlock()
		})
	}
}
