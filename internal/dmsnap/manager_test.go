package dmsnap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/dmsnap"
	"banger/internal/dmsnap/dmsnaptest"
)

// baseSize is the test base image: 128 sectors.
const baseSize = 64 << 10

type env struct {
	root, state, base string
	fake              *dmsnaptest.Fake
	inj               *dmsnaptest.Injector
	m                 *dmsnap.Manager
}

func newEnv(t *testing.T, backend func(*dmsnaptest.Fake) dmsnap.Backend) *env {
	t.Helper()
	e := &env{root: t.TempDir(), state: t.TempDir(), fake: dmsnaptest.NewFake()}
	e.base = filepath.Join(e.root, "base.img")
	if err := os.WriteFile(e.base, make([]byte, baseSize), 0o644); err != nil {
		t.Fatal(err)
	}
	var b dmsnap.Backend = e.fake
	if backend != nil {
		b = backend(e.fake)
	}
	e.inj = dmsnaptest.Inject(b, nil)
	e.open(t)
	return e
}

func (e *env) open(t *testing.T) {
	t.Helper()
	m, err := dmsnap.Open(dmsnap.Config{Root: e.root, StateDir: e.state, Backend: e.inj, RemoveAttempts: 3, RemoveDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	t.Cleanup(func() { m.Close() })
}

// restart simulates the helper restarting on the same kernel state.
func (e *env) restart(t *testing.T) {
	t.Helper()
	e.m.Close()
	e.open(t)
}

func (e *env) spec(id string) dmsnap.Spec {
	return dmsnap.Spec{ID: id, Base: e.base, COW: filepath.Join(e.root, id+".cow")}
}

var tokenRE = regexp.MustCompile(`(banger-dmsnap-[A-Za-z0-9-]+?)-[0-9a-f]{16}`)

// state is the fake's state with the root and uuid tokens normalised.
func (e *env) state_() string {
	return tokenRE.ReplaceAllString(strings.ReplaceAll(e.fake.String(), e.root, "$ROOT"), "$1-TOKEN")
}

// journal returns the journal file's devices.
func (e *env) journal(t *testing.T) map[string]dmsnap.Entry {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.state, dmsnap.JournalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version int                     `json:"version"`
		Devices map[string]dmsnap.Entry `json:"devices"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Devices
}

// requireClean checks no loop or dm device is left and the journal, on
// disk and in memory, is empty.
func (e *env) requireClean(t *testing.T) {
	t.Helper()
	if s := e.state_(); s != "" {
		t.Errorf("devices left:\n%s", s)
	}
	if j := e.journal(t); len(j) != 0 {
		t.Errorf("journal not empty: %+v", j)
	}
	if es := e.m.Entries(); len(es) != 0 {
		t.Errorf("entries in memory: %+v", es)
	}
}

func TestCreateRemoveRoundTrip(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	got, err := e.m.Create(ctx, e.spec("vm1"))
	if err != nil {
		t.Fatal(err)
	}
	if got.State != dmsnap.StateActive || got.Name != "banger-vm1" || got.DM.Path != "/dev/dm-0" || got.DM.Major != 253 ||
		got.BaseLoop.Path != "/dev/loop0" || got.COWLoop.Path != "/dev/loop1" || got.Sectors != 128 || got.ChunkSectors != 8 {
		t.Errorf("entry = %+v", got)
	}
	want := "loop0 ro autoclear opens=1 $ROOT/base.img\n" +
		"loop1 rw autoclear opens=1 $ROOT/vm1.cow\n" +
		"dm-0 banger-vm1 uuid=banger-dmsnap-vm1-TOKEN open=0 table=[0 128 snapshot 7:0 7:1 P 8]\n"
	if s := e.state_(); s != want {
		t.Errorf("state\n%s\nwant\n%s", s, want)
	}
	j := e.journal(t)
	if len(j) != 1 || j["vm1"].State != dmsnap.StateActive || j["vm1"].UUID != got.UUID || j["vm1"].COW.Ino == 0 {
		t.Errorf("journal = %+v", j)
	}
	st, err := os.Stat(e.spec("vm1").COW)
	if err != nil || st.Size() != dmsnap.DefaultCOWSize(baseSize) || st.Mode().Perm() != 0o600 {
		t.Errorf("cow file: %v, %v", st, err)
	}
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	e.requireClean(t)
	if _, err := os.Stat(e.spec("vm1").COW); err != nil {
		t.Errorf("the COW file is the caller's: %v", err)
	}
	// Resume brings the same COW back under a new uuid.
	s := e.spec("vm1")
	s.Resume = true
	again, err := e.m.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if again.UUID == got.UUID {
		t.Error("a uuid was reused")
	}
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	e.requireClean(t)
}

// TestCreateFailureAfterEachStep fails each backend step of Create in
// turn, with and without autoclear: nothing may be left behind.
func TestCreateFailureAfterEachStep(t *testing.T) {
	steps := []struct {
		name string
		fail func(dmsnaptest.Call) error
	}{
		{"base loop", dmsnaptest.FailAttach(true)},
		{"cow loop", dmsnaptest.FailAttach(false)},
		{"dm create", dmsnaptest.FailOn(dmsnaptest.OpCreateDM, 0)},
	}
	for _, autoclear := range []bool{true, false} {
		for _, st := range steps {
			t.Run(fmt.Sprintf("%s/autoclear=%v", st.name, autoclear), func(t *testing.T) {
				e := newEnv(t, nil)
				e.fake.NoAutoclear = !autoclear
				e.inj.SetFail(st.fail)
				_, err := e.m.Create(context.Background(), e.spec("vm1"))
				if !errors.Is(err, dmsnaptest.ErrInjected) {
					t.Fatalf("err = %v, want the injected failure", err)
				}
				e.requireClean(t)
				if _, err := os.Stat(e.spec("vm1").COW); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the new COW file was left: %v", err)
				}
				// The id is free again.
				e.inj.SetFail(nil)
				if _, err := e.m.Create(context.Background(), e.spec("vm1")); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestCreateUndoFailureLeavesFaulty: when the undo itself fails, the
// entry stays faulty, the name is not reused, and Reconcile finishes it.
func TestCreateUndoFailureLeavesFaulty(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.NoAutoclear = true
	e.inj.SetFail(func(c dmsnaptest.Call) error {
		if c.Op == dmsnaptest.OpCreateDM || c.Op == dmsnaptest.OpDetachLoop {
			return fmt.Errorf("%s: %w", c.Op, dmsnaptest.ErrInjected)
		}
		return nil
	})
	_, err := e.m.Create(context.Background(), e.spec("vm1"))
	if err == nil || !strings.Contains(err.Error(), "undo failed, left faulty") {
		t.Fatalf("err = %v", err)
	}
	got, ok := e.m.Get("vm1")
	if !ok || got.State != dmsnap.StateFaulty || !strings.Contains(got.Error, "undo") {
		t.Fatalf("entry = %+v, %v", got, ok)
	}
	e.inj.SetFail(nil)
	if _, err := e.m.Create(context.Background(), e.spec("vm1")); !errors.Is(err, dmsnap.ErrInUse) {
		t.Fatalf("faulty id reused: %v", err)
	}
	rep, err := e.m.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Actions) != 1 || rep.Actions[0].Was != dmsnap.StateFaulty || rep.Actions[0].Err != "" || len(rep.Actions[0].Removed) != 2 {
		t.Errorf("report:\n%s", rep)
	}
	e.requireClean(t)
}

// TestCrashThenReconcile kills Create after each step (the kernel closes
// the dead process's descriptors; nothing else happens), restarts and
// reconciles: everything is torn down and reported.
func TestCrashThenReconcile(t *testing.T) {
	for _, autoclear := range []bool{true, false} {
		for _, tc := range []struct {
			point string
			// before is the state at the crash; after checks the report.
			before string
			report []string
		}{
			{dmsnap.CrashAfterBaseAttach,
				map[bool]string{true: "", false: "loop0 ro opens=0 $ROOT/base.img\n"}[autoclear],
				map[bool][]string{
					true:  {"entry vm1 (creating): interrupted while creating; removed []; dropped"},
					false: {"entry vm1 (creating): interrupted while creating; removed []; dropped", "leaked loop /dev/loop0 ($ROOT/base.img): detached"},
				}[autoclear]},
			{dmsnap.CrashAfterBaseLoop,
				map[bool]string{true: "", false: "loop0 ro opens=0 $ROOT/base.img\n"}[autoclear],
				map[bool][]string{
					true:  {"entry vm1 (creating): interrupted while creating; removed []; dropped"},
					false: {"entry vm1 (creating): interrupted while creating; removed [loop /dev/loop0 ($ROOT/base.img)]; dropped"},
				}[autoclear]},
			{dmsnap.CrashAfterCOWLoop,
				map[bool]string{true: "", false: "loop0 ro opens=0 $ROOT/base.img\nloop1 rw opens=0 $ROOT/vm1.cow\n"}[autoclear],
				map[bool][]string{
					true:  {"entry vm1 (creating): interrupted while creating; removed []; dropped"},
					false: {"entry vm1 (creating): interrupted while creating; removed [loop /dev/loop1 ($ROOT/vm1.cow), loop /dev/loop0 ($ROOT/base.img)]; dropped"},
				}[autoclear]},
			{dmsnap.CrashAfterDMCreate,
				map[bool]string{
					true:  "loop0 ro autoclear opens=1 $ROOT/base.img\nloop1 rw autoclear opens=1 $ROOT/vm1.cow\ndm-0 banger-vm1 uuid=banger-dmsnap-vm1-TOKEN open=0 table=[0 128 snapshot 7:0 7:1 P 8]\n",
					false: "loop0 ro opens=1 $ROOT/base.img\nloop1 rw opens=1 $ROOT/vm1.cow\ndm-0 banger-vm1 uuid=banger-dmsnap-vm1-TOKEN open=0 table=[0 128 snapshot 7:0 7:1 P 8]\n",
				}[autoclear],
				map[bool][]string{
					true:  {"entry vm1 (creating): interrupted while creating; removed [dm banger-vm1]; dropped"},
					false: {"entry vm1 (creating): interrupted while creating; removed [dm banger-vm1, loop /dev/loop1 ($ROOT/vm1.cow), loop /dev/loop0 ($ROOT/base.img)]; dropped"},
				}[autoclear]},
		} {
			t.Run(fmt.Sprintf("%s/autoclear=%v", tc.point, autoclear), func(t *testing.T) {
				e := newEnv(t, nil)
				e.fake.NoAutoclear = !autoclear
				dmsnap.SetCrashHook(e.m, func(p string) bool { return p == tc.point })
				if _, err := e.m.Create(context.Background(), e.spec("vm1")); !errors.Is(err, dmsnap.ErrCrashed) {
					t.Fatalf("err = %v, want the simulated crash", err)
				}
				if s := e.state_(); s != tc.before {
					t.Errorf("state at the crash\n%s\nwant\n%s", s, tc.before)
				}
				if j := e.journal(t); j["vm1"].State != dmsnap.StateCreating {
					t.Errorf("journal at the crash: %+v", j)
				}
				e.restart(t)
				// Not reusable before the reconcile.
				if _, err := e.m.Create(context.Background(), e.spec("vm1")); !errors.Is(err, dmsnap.ErrInUse) {
					t.Errorf("id reused before reconcile: %v", err)
				}
				rep, err := e.m.Reconcile(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				want := strings.Join(tc.report, "\n") + "\n"
				if got := strings.ReplaceAll(rep.String(), e.root, "$ROOT"); got != want {
					t.Errorf("report\n%s\nwant\n%s", got, want)
				}
				e.requireClean(t)
				// Reconcile is idempotent.
				if rep, err := e.m.Reconcile(context.Background()); err != nil || !rep.Clean() {
					t.Errorf("second reconcile: %v\n%s", err, rep)
				}
			})
		}
	}
}

func TestCrashDuringRemoveThenReconcile(t *testing.T) {
	for _, autoclear := range []bool{true, false} {
		for _, point := range []string{dmsnap.CrashAfterMarkRemoving, dmsnap.CrashAfterDMRemove} {
			t.Run(fmt.Sprintf("%s/autoclear=%v", point, autoclear), func(t *testing.T) {
				e := newEnv(t, nil)
				e.fake.NoAutoclear = !autoclear
				if _, err := e.m.Create(context.Background(), e.spec("vm1")); err != nil {
					t.Fatal(err)
				}
				dmsnap.SetCrashHook(e.m, func(p string) bool { return p == point })
				if err := e.m.Remove(context.Background(), "vm1"); !errors.Is(err, dmsnap.ErrCrashed) {
					t.Fatalf("err = %v", err)
				}
				if j := e.journal(t); j["vm1"].State != dmsnap.StateRemoving {
					t.Errorf("journal at the crash: %+v", j)
				}
				e.restart(t)
				rep, err := e.m.Reconcile(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if len(rep.Actions) != 1 || rep.Actions[0].Was != dmsnap.StateRemoving || rep.Actions[0].Err != "" {
					t.Errorf("report:\n%s", rep)
				}
				e.requireClean(t)
			})
		}
	}
}

func TestRemoveRetriesBusy(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.m.Create(context.Background(), e.spec("vm1")); err != nil {
		t.Fatal(err)
	}
	e.fake.SetBusy("banger-vm1", 2)
	e.inj.SetFail(nil)
	if err := e.m.Remove(context.Background(), "vm1"); err != nil {
		t.Fatal(err)
	}
	if n := e.inj.Count(dmsnaptest.OpRemoveDM); n != 3 {
		t.Errorf("RemoveDM called %d times, want 3 (two EBUSY, then success)", n)
	}
	e.requireClean(t)
}

func TestRemoveBusyForever(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.m.Create(ctx, e.spec("vm1")); err != nil {
		t.Fatal(err)
	}
	release := e.fake.Open("banger-vm1") // a VM still uses it
	err := e.m.Remove(ctx, "vm1")
	if !errors.Is(err, dmsnap.ErrBusy) || !strings.Contains(err.Error(), "still busy after 3 attempts") {
		t.Fatalf("err = %v", err)
	}
	got, _ := e.m.Get("vm1")
	if got.State != dmsnap.StateRemoving || !strings.Contains(got.Error, "busy") {
		t.Errorf("entry = %+v", got)
	}
	if !strings.Contains(e.state_(), "dm-0 banger-vm1") {
		t.Errorf("the busy device was touched:\n%s", e.state_())
	}
	if _, err := e.m.Create(ctx, e.spec("vm1")); !errors.Is(err, dmsnap.ErrInUse) {
		t.Errorf("id reused while removing: %v", err)
	}
	// A reconcile meanwhile cannot finish either: faulty, kept.
	rep, err := e.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Actions) != 1 || rep.Actions[0].Err == "" || !strings.Contains(rep.String(), "kept faulty") {
		t.Errorf("report:\n%s", rep)
	}
	if got, _ := e.m.Get("vm1"); got.State != dmsnap.StateFaulty {
		t.Errorf("entry = %+v", got)
	}
	release()
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	e.requireClean(t)
}

func TestRemoveUnknownOrGone(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.m.Remove(ctx, "never-made"); err != nil {
		t.Errorf("unknown id: %v", err)
	}
	if err := e.m.Remove(ctx, "bad/id"); err == nil {
		t.Error("invalid id accepted")
	}
	got, err := e.m.Create(ctx, e.spec("vm1"))
	if err != nil {
		t.Fatal(err)
	}
	// Everything disappears behind the journal's back (a reboot).
	if err := e.fake.RemoveDM(ctx, got.UUID); err != nil {
		t.Fatal(err)
	}
	if s := e.state_(); s != "" {
		t.Fatalf("autoclear left:\n%s", s)
	}
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Errorf("already gone: %v", err)
	}
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Errorf("twice: %v", err)
	}
	e.requireClean(t)
	// A device named like ours that the journal does not record is never
	// touched by Remove.
	if _, err := e.fake.CreateDM(ctx, "banger-vm2", "someone-else", []dmsnap.Target{{Length: 8, Type: "zero"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Remove(ctx, "vm2"); err != nil {
		t.Errorf("unrecorded: %v", err)
	}
	if !strings.Contains(e.state_(), "banger-vm2 uuid=someone-else") {
		t.Error("an unrecorded device was removed")
	}
	// ... and Create refuses the taken name, leaving nothing.
	if _, err := e.m.Create(ctx, e.spec("vm2")); !errors.Is(err, dmsnap.ErrExists) {
		t.Errorf("create over a foreign device: %v", err)
	}
	if s := e.state_(); s != "dm-0 banger-vm2 uuid=someone-else open=0 table=[0 8 zero ]\n" {
		t.Errorf("state:\n%s", s)
	}
}

// TestReconcileAfterReboot: the kernel state is gone; active entries are
// dropped and the COW files can be resumed.
func TestReconcileAfterReboot(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, id := range []string{"vm1", "vm2"} {
		if _, err := e.m.Create(ctx, e.spec(id)); err != nil {
			t.Fatal(err)
		}
	}
	e.m.Close()
	e.fake = dmsnaptest.NewFake()
	e.inj = dmsnaptest.Inject(e.fake, nil)
	e.open(t)
	rep, err := e.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := "entry vm1 (active): active but its dm device is gone; removed []; dropped\n" +
		"entry vm2 (active): active but its dm device is gone; removed []; dropped\n"
	if rep.String() != want {
		t.Errorf("report\n%s\nwant\n%s", rep, want)
	}
	e.requireClean(t)
	s := e.spec("vm1")
	s.Resume = true
	if _, err := e.m.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileKeepsHealthyAndReportsLeaks(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.NoAutoclear = true
	ctx := context.Background()
	if _, err := e.m.Create(ctx, e.spec("vm1")); err != nil {
		t.Fatal(err)
	}
	// A loop on a file under the root that the journal does not know, one
	// on a file elsewhere, and a banger-named dm device of someone else.
	leak := filepath.Join(e.root, "leak.cow")
	other := filepath.Join(t.TempDir(), "other.img")
	for _, p := range []string{leak, other} {
		if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, h, err := e.fake.AttachLoop(ctx, f, false)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
	}
	if _, err := e.fake.CreateDM(ctx, "banger-foreign", "not-ours", []dmsnap.Target{{Length: 8, Type: "zero"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := e.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := "leaked loop /dev/loop2 ($ROOT/leak.cow): detached\n" +
		"unknown dm device banger-foreign (uuid \"not-ours\"): left alone\n"
	if got := strings.ReplaceAll(rep.String(), e.root, "$ROOT"); got != want {
		t.Errorf("report\n%s\nwant\n%s", got, want)
	}
	if got, ok := e.m.Get("vm1"); !ok || got.State != dmsnap.StateActive {
		t.Errorf("healthy entry: %+v", got)
	}
	s := e.state_()
	if strings.Contains(s, "leak.cow") || !strings.Contains(s, "other.img") || !strings.Contains(s, "banger-foreign") || !strings.Contains(s, "banger-vm1") {
		t.Errorf("state:\n%s", s)
	}
}

func TestCreateRefusals(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	write := func(name string, size int) string {
		p := filepath.Join(e.root, name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	odd := write("odd.img", 4097)
	tiny := write("tiny.img", 512)
	existing := write("existing.cow", 1<<20)
	linked := write("linked.cow", 1<<20)
	if err := os.Link(linked, filepath.Join(e.root, "hardlink.cow")); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(outside, make([]byte, baseSize), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(e.root, "link.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(t.TempDir(), "x.cow"), filepath.Join(e.root, "link.cow")); err != nil {
		t.Fatal(err)
	}
	spec := func(mod func(*dmsnap.Spec)) dmsnap.Spec {
		s := e.spec("vm1")
		mod(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		s    dmsnap.Spec
		want string
	}{
		{"bad id", spec(func(s *dmsnap.Spec) { s.ID = "../x" }), "invalid vm id"},
		{"base outside", spec(func(s *dmsnap.Spec) { s.Base = outside }), "not under"},
		{"base symlink", spec(func(s *dmsnap.Spec) { s.Base = filepath.Join(e.root, "link.img") }), "symlink"},
		{"cow symlink", spec(func(s *dmsnap.Spec) { s.COW = filepath.Join(e.root, "link.cow") }), "symlink"},
		{"base odd size", spec(func(s *dmsnap.Spec) { s.Base = odd }), "multiple of 512"},
		{"base smaller than a chunk", spec(func(s *dmsnap.Spec) { s.Base = tiny }), "multiple of 512"},
		{"cow exists", spec(func(s *dmsnap.Spec) { s.COW = existing }), "pass Resume"},
		{"resume missing", spec(func(s *dmsnap.Spec) { s.Resume = true }), "no such file"},
		{"cow is base", spec(func(s *dmsnap.Spec) { s.COW = e.base; s.Resume = true }), "base image itself"},
		{"cow hard link", spec(func(s *dmsnap.Spec) { s.COW = linked; s.Resume = true }), "2 links"},
		{"cow too small", spec(func(s *dmsnap.Spec) { s.COWSize = 4096 }), "too small"},
		{"bad chunk", spec(func(s *dmsnap.Spec) { s.ChunkSectors = 12 }), "power of two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Create(ctx, tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			e.requireClean(t)
			if !tc.s.Resume && tc.s.COW == e.spec("vm1").COW {
				if _, err := os.Stat(tc.s.COW); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused create left its COW file: %v", err)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(outside), "x.cow")); err == nil {
		t.Error("a COW file was created through a symlink")
	}

	// A COW file still bound to a loop (leaked) is refused.
	f, err := os.OpenFile(existing, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, h, err := e.fake.AttachLoop(ctx, f, false)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	s := e.spec("vm2")
	s.COW, s.Resume = existing, true
	if _, err := e.m.Create(ctx, s); err == nil || !strings.Contains(err.Error(), "already bound") {
		t.Errorf("bound cow: %v", err)
	}

	// The same id twice.
	if _, err := e.m.Create(ctx, e.spec("vm3")); err != nil {
		t.Fatal(err)
	}
	// Another VM on vm3's COW file, or on it as a base.
	s = e.spec("vm4")
	s.COW, s.Resume = e.spec("vm3").COW, true
	if _, err := e.m.Create(ctx, s); !errors.Is(err, dmsnap.ErrInUse) {
		t.Errorf("a second writer on a COW file: %v", err)
	}
	s = e.spec("vm4")
	s.Base = e.spec("vm3").COW
	if _, err := e.m.Create(ctx, s); !errors.Is(err, dmsnap.ErrInUse) {
		t.Errorf("a COW file as a base: %v", err)
	}
	s = e.spec("vm3")
	s.COW = filepath.Join(e.root, "vm3-b.cow")
	if _, err := e.m.Create(ctx, s); !errors.Is(err, dmsnap.ErrInUse) {
		t.Errorf("same id twice: %v", err)
	}
}

func TestOpenRefusals(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := dmsnap.Open(dmsnap.Config{Root: e.root, StateDir: e.state, Backend: e.fake}); err == nil {
		t.Error("a second manager on the same state directory was allowed")
	}
	for _, cfg := range []dmsnap.Config{
		{Root: "relative", StateDir: t.TempDir(), Backend: e.fake},
		{Root: "/", StateDir: t.TempDir(), Backend: e.fake},
		{Root: e.base, StateDir: t.TempDir(), Backend: e.fake},
		{Root: e.root, StateDir: t.TempDir()},
		{Root: e.root, Backend: e.fake},
	} {
		if m, err := dmsnap.Open(cfg); err == nil {
			m.Close()
			t.Errorf("Open(%+v) accepted", cfg)
		}
	}
}

// TestConcurrent runs 20 creates, then 20 removes, at once (run with
// -race).
func TestConcurrent(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Go(func() {
			if _, err := e.m.Create(ctx, e.spec(fmt.Sprintf("vm%02d", i))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	if len(e.m.Entries()) != 20 || len(e.journal(t)) != 20 {
		t.Fatalf("entries %d, journal %d", len(e.m.Entries()), len(e.journal(t)))
	}
	for i := range 20 {
		wg.Go(func() {
			if err := e.m.Remove(ctx, fmt.Sprintf("vm%02d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.requireClean(t)
}

// TestExecBackendOverFakeRunner drives ExecBackend (the losetup and
// dmsetup argv, their output parsing and error classification) against
// the fake's runner.
func TestExecBackendOverFakeRunner(t *testing.T) {
	e := newEnv(t, func(k *dmsnaptest.Fake) dmsnap.Backend {
		return &dmsnap.ExecBackend{Run: k.Runner(), DevDir: t.TempDir()}
	})
	ctx := context.Background()
	got, err := e.m.Create(ctx, e.spec("vm1"))
	if err != nil {
		t.Fatal(err)
	}
	// No such device on the host: no node found.
	if got.DM.Path != "" || got.DM.Major != 253 || got.BaseLoop.Path != "/dev/loop0" {
		t.Errorf("entry = %+v", got)
	}
	want := "loop0 ro opens=1 $ROOT/base.img\n" +
		"loop1 rw opens=1 $ROOT/vm1.cow\n" +
		"dm-0 banger-vm1 uuid=banger-dmsnap-vm1-TOKEN open=0 table=[0 128 snapshot 7:0 7:1 P 8]\n"
	if s := e.state_(); s != want {
		t.Errorf("state\n%s\nwant\n%s", s, want)
	}
	e.fake.SetBusy("banger-vm1", 1)
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	e.requireClean(t)

	if _, err := e.m.Create(ctx, e.spec("vm2")); err != nil {
		t.Fatal(err)
	}
	release := e.fake.Open("banger-vm2")
	if err := e.m.Remove(ctx, "vm2"); !errors.Is(err, dmsnap.ErrBusy) {
		t.Errorf("busy through dmsetup: %v", err)
	}
	release()
	dmsnap.SetCrashHook(e.m, func(p string) bool { return p == dmsnap.CrashAfterCOWLoop })
	if _, err := e.m.Create(ctx, e.spec("vm3")); !errors.Is(err, dmsnap.ErrCrashed) {
		t.Fatal(err)
	}
	e.restart(t)
	rep, err := e.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Actions) != 2 || rep.Actions[0].ID != "vm2" || rep.Actions[1].ID != "vm3" || len(rep.Actions[1].Removed) != 2 {
		t.Errorf("report:\n%s", rep)
	}
	e.requireClean(t)

	// dmsetup ls and table, for completeness of the fake's dmsetup.
	if _, err := e.fake.CreateDM(ctx, "banger-x", "u-x", []dmsnap.Target{{Length: 8, Type: "zero"}}); err != nil {
		t.Fatal(err)
	}
	r := e.fake.Runner()
	args, _ := dmsnap.DmsetupLsArgs("zero")
	out, err := r.Run(ctx, "dmsetup", args...)
	if ls, perr := dmsnap.ParseDmsetupLs(out); err != nil || perr != nil || len(ls) != 1 || ls[0].Name != "banger-x" {
		t.Errorf("ls = %q, %v, %v", out, err, perr)
	}
	args, _ = dmsnap.DmsetupTableArgs("banger-x")
	out, err = r.Run(ctx, "dmsetup", args...)
	if tb, perr := dmsnap.ParseTable(out); err != nil || perr != nil || len(tb) != 1 || tb[0].Type != "zero" {
		t.Errorf("table = %q, %v, %v", out, err, perr)
	}
}
