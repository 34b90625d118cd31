package dmsnap_test

// Tests against the real kernel. They run only as root with
// BANGER_TEST_ROOT=1, and skip (saying why) without /dev/loop-control or,
// for the snapshot tests, /dev/mapper/control. They are built to run in a
// bare guest too: the test binary is static (CGO_ENABLED=0) and, with the
// default ioctl backend, needs no program; see docs/storage.md.
//
// BANGER_TEST_DMSNAP_BACKEND=exec runs the snapshot tests through losetup
// (util-linux) and dmsetup instead.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/dmsnap"
	"banger/internal/dmsnap/dmsnaptest"
	"banger/internal/execx"

	"golang.org/x/sys/unix"
)

func requireRealKernel(t *testing.T, needDM bool) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test: needs root")
	}
	if os.Getenv("BANGER_TEST_ROOT") != "1" {
		t.Skip("real-kernel test: set BANGER_TEST_ROOT=1 to run")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("real-kernel test: no loop support (%v); load the loop module", err)
	}
	if needDM {
		if _, err := os.Stat("/dev/mapper/control"); err != nil {
			t.Skipf("real-kernel test: no device-mapper (%v); load dm_mod and dm_snapshot", err)
		}
	}
}

func realBackend(t *testing.T) dmsnap.Backend {
	t.Helper()
	if os.Getenv("BANGER_TEST_DMSNAP_BACKEND") == "exec" {
		for _, bin := range []string{"losetup", "dmsetup"} {
			if _, err := execx.LookPath(bin); err != nil {
				t.Skipf("exec backend: %v", err)
			}
		}
		return &dmsnap.ExecBackend{Run: execx.Default}
	}
	return dmsnap.NewIoctlBackend()
}

// residue lists, straight from sysfs (not through the code under test),
// the loops bound to files under root and the dm devices named
// banger-<prefix>*.
func residue(root, prefix string) []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(string(b), root+"/") {
			out = append(out, fmt.Sprintf("%s -> %s", strings.Split(f, "/")[3], strings.TrimSpace(string(b))))
		}
	}
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, f := range names {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dmsnap.NamePrefix+prefix) {
			out = append(out, fmt.Sprintf("%s = %s", strings.Split(f, "/")[3], strings.TrimSpace(string(b))))
		}
	}
	return out
}

// requireNoResidue waits a little (a loop's autoclear can finish after
// the last close returns on some kernels) for the residue to go.
func requireNoResidue(t *testing.T, root, prefix string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := residue(root, prefix)
		if len(r) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind:\n%s", strings.Join(r, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const blockSize = 4096

// fillBlock repeats s over one block.
func fillBlock(s string) []byte {
	return bytes.Repeat([]byte(s), blockSize/len(s)+1)[:blockSize]
}

// basePattern is the content of block n of the base image.
func basePattern(n int) []byte { return fillBlock(fmt.Sprintf("base-block-%06d|", n)) }

func writeBase(t *testing.T, path string, blocks int) [32]byte {
	t.Helper()
	var buf bytes.Buffer
	for n := range blocks {
		buf.Write(basePattern(n))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(buf.Bytes())
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestLoopIoctlsRoot exercises IoctlBackend's loop half, which needs no
// device-mapper: read-only and read-write binding, autoclear, identity
// checks on detach.
func TestLoopIoctlsRoot(t *testing.T) {
	requireRealKernel(t, false)
	ctx := context.Background()
	root := t.TempDir()
	b := dmsnap.NewIoctlBackend()
	base := filepath.Join(root, "base.img")
	writeBase(t, base, 256)
	cowPath := filepath.Join(root, "vm.cow")
	if err := os.WriteFile(cowPath, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { requireNoResidue(t, root, "") })

	bf, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	bl, bh, err := b.AttachLoop(ctx, bf, true)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	sys := filepath.Join("/sys/block", filepath.Base(bl.Path))
	for file, want := range map[string]string{"ro": "1", "loop/autoclear": "1", "loop/backing_file": base} {
		if got, _ := os.ReadFile(filepath.Join(sys, file)); strings.TrimSpace(string(got)) != want {
			t.Errorf("%s/%s = %q, want %q", sys, file, got, want)
		}
	}
	loops, err := b.Loops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range loops {
		if l.Path == bl.Path {
			found = l.Backing == base && l.ReadOnly && l.Autoclear && l.DevNum() == bl.DevNum()
		}
	}
	if !found {
		t.Errorf("Loops() does not show %+v: %+v", bl, loops)
	}
	dev, err := os.Open(bl.Path)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, blockSize)
	if _, err := dev.ReadAt(got, 7*blockSize); err != nil || !bytes.Equal(got, basePattern(7)) {
		t.Errorf("read through the loop: %v", err)
	}
	dev.Close()
	// A read-only loop refuses writes (at open or at write, by kernel).
	if w, err := os.OpenFile(bl.Path, os.O_WRONLY, 0); err == nil {
		_, werr := w.WriteAt([]byte("x"), 0)
		if werr == nil {
			werr = w.Sync()
		}
		w.Close()
		if werr == nil {
			t.Error("a write through the read-only loop succeeded")
		}
	}

	cf, err := os.OpenFile(cowPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	cl, ch, err := b.AttachLoop(ctx, cf, false)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Path == bl.Path {
		t.Fatal("two files on one loop")
	}
	w, err := os.OpenFile(cl.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("through the loop"), 8192); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	content, _ := os.ReadFile(cowPath)
	if !bytes.Equal(content[8192:8192+16], []byte("through the loop")) {
		t.Error("a write through the rw loop did not reach the file")
	}

	var st unix.Stat_t
	if err := unix.Stat(base, &st); err != nil {
		t.Fatal(err)
	}
	baseID := dmsnap.File{Path: base, Dev: uint64(st.Dev), Ino: st.Ino}
	if err := unix.Stat(cowPath, &st); err != nil {
		t.Fatal(err)
	}
	cowID := dmsnap.File{Path: cowPath, Dev: uint64(st.Dev), Ino: st.Ino}

	// Detaching with the wrong identity is refused and changes nothing.
	if err := b.DetachLoop(ctx, bl.Path, cowID); !errors.Is(err, dmsnap.ErrNotFound) {
		t.Errorf("detach with another file's identity: %v", err)
	}
	if err := b.DetachLoop(ctx, bl.Path, dmsnap.File{Path: cowPath}); !errors.Is(err, dmsnap.ErrNotFound) {
		t.Errorf("detach with another file's path: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sys, "loop", "backing_file")); err != nil {
		t.Fatal("the loop was detached by a refused call")
	}
	// Autoclear: the last close of the COW loop detaches it.
	ch.Close()
	waitGone(t, cl.Path)
	if err := b.DetachLoop(ctx, cl.Path, cowID); !errors.Is(err, dmsnap.ErrNotFound) {
		t.Errorf("detach of a gone loop: %v", err)
	}
	// An explicit detach while the hold is open is lazy.
	if err := b.DetachLoop(ctx, bl.Path, baseID); err != nil {
		t.Fatal(err)
	}
	bh.Close()
	waitGone(t, bl.Path)
}

func waitGone(t *testing.T, dev string) {
	t.Helper()
	f := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still bound", dev)
		}
	}
}

type realEnv struct {
	root, state, base, prefix string
	baseSum                   [32]byte
	blocks                    int
	inj                       *dmsnaptest.Injector
	m                         *dmsnap.Manager
}

func newRealEnv(t *testing.T, blocks int) *realEnv {
	t.Helper()
	requireRealKernel(t, true)
	e := &realEnv{root: t.TempDir(), state: t.TempDir(), blocks: blocks, prefix: fmt.Sprintf("t%d-", os.Getpid())}
	e.base = filepath.Join(e.root, "base.img")
	e.baseSum = writeBase(t, e.base, blocks)
	e.inj = dmsnaptest.Inject(realBackend(t), nil)
	e.open(t)
	t.Cleanup(func() {
		// Best effort, so a failed run does not leave devices on the host.
		e.inj.SetFail(nil)
		dmsnap.SetCrashHook(e.m, nil)
		for _, en := range e.m.Entries() {
			_ = e.m.Remove(context.Background(), en.ID)
		}
		_, _ = e.m.Reconcile(context.Background())
		e.m.Close()
		requireNoResidue(t, e.root, e.prefix)
	})
	return e
}

func (e *realEnv) open(t *testing.T) {
	t.Helper()
	m, err := dmsnap.Open(dmsnap.Config{Root: e.root, StateDir: e.state, Backend: e.inj, RemoveAttempts: 10, RemoveDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
}

func (e *realEnv) restart(t *testing.T) {
	t.Helper()
	e.m.Close()
	e.open(t)
}

func (e *realEnv) id(i int) string { return fmt.Sprintf("%s%02d", e.prefix, i) }

func (e *realEnv) spec(i int) dmsnap.Spec {
	return dmsnap.Spec{ID: e.id(i), Base: e.base, COW: filepath.Join(e.root, e.id(i)+".cow")}
}

// vmWrites is what snapshot i writes: its own whole block, an unaligned
// run inside block 3, and the last block.
func (e *realEnv) vmWrites(i int) map[int64][]byte {
	own := fillBlock(fmt.Sprintf("vm%02d-own-block|", i))
	last := fillBlock(fmt.Sprintf("vm%02d-last|", i))
	return map[int64][]byte{
		int64(10+i) * blockSize:            own,
		3*blockSize + 1000:                 []byte(fmt.Sprintf("vm%02d unaligned write across nothing in particular", i)),
		int64(e.blocks-1) * blockSize:      last,
		int64(e.blocks/2)*blockSize + 4000: []byte(fmt.Sprintf("vm%02d straddles two blocks", i)),
	}
}

// expected is snapshot i's whole content after its writes.
func (e *realEnv) expected(i int) []byte {
	var buf bytes.Buffer
	for n := range e.blocks {
		buf.Write(basePattern(n))
	}
	b := buf.Bytes()
	for off, data := range e.vmWrites(i) {
		copy(b[off:], data)
	}
	return b
}

func (e *realEnv) write(i int, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for off, data := range e.vmWrites(i) {
		if _, err := f.WriteAt(data, off); err != nil {
			return fmt.Errorf("write %s at %d: %w", path, off, err)
		}
	}
	return f.Sync()
}

// verify reads the device back from the disk (its page cache dropped
// with BLKFLSBUF, so the reads go through the snapshot mapping).
func (e *realEnv) verify(i int, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("flush %s: %w", path, err)
	}
	got, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	want := e.expected(i)
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d bytes, want %d", path, len(got), len(want))
	}
	for n := 0; n < len(want); n += blockSize {
		if !bytes.Equal(got[n:n+blockSize], want[n:n+blockSize]) {
			return fmt.Errorf("snapshot %d (%s), block %d: got %.40q, want %.40q (first 40 bytes)", i, path, n/blockSize, got[n:], want[n:])
		}
	}
	return nil
}

func parallel(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// TestSnapshotsRoot creates 20 snapshots of one 8 MiB base at once,
// writes different data through each, checks no write shows in another
// snapshot or in the base, resumes one from its COW file, and removes
// them all at once without residue.
func TestSnapshotsRoot(t *testing.T) {
	const n = 20
	e := newRealEnv(t, 2048)
	ctx := context.Background()
	entries := make([]dmsnap.Entry, n)
	err := parallel(n, func(i int) error {
		var err error
		entries[i], err = e.m.Create(ctx, e.spec(i))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, en := range entries {
		if en.State != dmsnap.StateActive || en.DM.Path == "" {
			t.Fatalf("snapshot %d: %+v", i, en)
		}
	}
	if err := parallel(n, func(i int) error { return e.write(i, entries[i].DM.Path) }); err != nil {
		t.Fatal(err)
	}
	if err := parallel(n, func(i int) error { return e.verify(i, entries[i].DM.Path) }); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, e.base) != e.baseSum {
		t.Fatal("the base image changed")
	}

	// Persistent: the same COW file brings snapshot 0 back as it was.
	if err := e.m.Remove(ctx, e.id(0)); err != nil {
		t.Fatal(err)
	}
	s := e.spec(0)
	s.Resume = true
	if entries[0], err = e.m.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := e.verify(0, entries[0].DM.Path); err != nil {
		t.Fatalf("after resume: %v", err)
	}

	rep, err := e.m.Reconcile(ctx)
	if err != nil || !rep.Clean() {
		t.Fatalf("reconcile with %d healthy snapshots: %v\n%s", n, err, rep)
	}
	if err := parallel(n, func(i int) error { return e.m.Remove(ctx, e.id(i)) }); err != nil {
		t.Fatal(err)
	}
	if es := e.m.Entries(); len(es) != 0 {
		t.Fatalf("entries left: %+v", es)
	}
	requireNoResidue(t, e.root, e.prefix)
	if fileSum(t, e.base) != e.baseSum {
		t.Fatal("the base image changed")
	}
}

// TestSnapshotFailuresRoot injects a failure at each step of Create, then
// kills Create and Remove after each step, against the real kernel:
// rollback and reconcile must leave nothing.
func TestSnapshotFailuresRoot(t *testing.T) {
	e := newRealEnv(t, 256)
	ctx := context.Background()
	i := 0
	next := func() int { i++; return i }

	for _, step := range []struct {
		name string
		fail func(dmsnaptest.Call) error
	}{
		{"base loop", dmsnaptest.FailAttach(true)},
		{"cow loop", dmsnaptest.FailAttach(false)},
		{"dm create", dmsnaptest.FailOn(dmsnaptest.OpCreateDM, 0)},
	} {
		t.Run("fail "+step.name, func(t *testing.T) {
			e.inj.SetFail(step.fail)
			defer e.inj.SetFail(nil)
			if _, err := e.m.Create(ctx, e.spec(next())); !errors.Is(err, dmsnaptest.ErrInjected) {
				t.Fatalf("err = %v", err)
			}
			requireNoResidue(t, e.root, e.prefix)
			if es := e.m.Entries(); len(es) != 0 {
				t.Fatalf("entries: %+v", es)
			}
		})
	}

	for _, point := range []string{dmsnap.CrashAfterBaseAttach, dmsnap.CrashAfterBaseLoop, dmsnap.CrashAfterCOWLoop, dmsnap.CrashAfterDMCreate} {
		t.Run("crash "+point, func(t *testing.T) {
			k := next()
			dmsnap.SetCrashHook(e.m, func(p string) bool { return p == point })
			if _, err := e.m.Create(ctx, e.spec(k)); !errors.Is(err, dmsnap.ErrCrashed) {
				t.Fatalf("err = %v", err)
			}
			e.restart(t)
			rep, err := e.m.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Actions) != 1 || rep.Actions[0].ID != e.id(k) || rep.Actions[0].Err != "" {
				t.Errorf("report:\n%s", rep)
			}
			if point == dmsnap.CrashAfterDMCreate && !strings.Contains(rep.String(), "dm "+dmsnap.NamePrefix+e.id(k)) {
				t.Errorf("the dm device is not in the report:\n%s", rep)
			}
			requireNoResidue(t, e.root, e.prefix)
			if es := e.m.Entries(); len(es) != 0 {
				t.Fatalf("entries: %+v", es)
			}
		})
	}

	for _, point := range []string{dmsnap.CrashAfterMarkRemoving, dmsnap.CrashAfterDMRemove} {
		t.Run("crash "+point, func(t *testing.T) {
			k := next()
			if _, err := e.m.Create(ctx, e.spec(k)); err != nil {
				t.Fatal(err)
			}
			dmsnap.SetCrashHook(e.m, func(p string) bool { return p == point })
			if err := e.m.Remove(ctx, e.id(k)); !errors.Is(err, dmsnap.ErrCrashed) {
				t.Fatalf("err = %v", err)
			}
			e.restart(t)
			rep, err := e.m.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Actions) != 1 || rep.Actions[0].Was != dmsnap.StateRemoving || rep.Actions[0].Err != "" {
				t.Errorf("report:\n%s", rep)
			}
			requireNoResidue(t, e.root, e.prefix)
		})
	}

	t.Run("busy", func(t *testing.T) {
		k := next()
		en, err := e.m.Create(ctx, e.spec(k))
		if err != nil {
			t.Fatal(err)
		}
		held, err := os.Open(en.DM.Path)
		if err != nil {
			t.Fatal(err)
		}
		err = e.m.Remove(ctx, e.id(k))
		if !errors.Is(err, dmsnap.ErrBusy) {
			held.Close()
			t.Fatalf("remove of an open device: %v", err)
		}
		if got, _ := e.m.Get(e.id(k)); got.State != dmsnap.StateRemoving {
			t.Errorf("entry = %+v", got)
		}
		held.Close()
		if err := e.m.Remove(ctx, e.id(k)); err != nil {
			t.Fatal(err)
		}
		requireNoResidue(t, e.root, e.prefix)
	})

	t.Run("table refused by the kernel", func(t *testing.T) {
		// CreateDM undoes its own DM_DEV_CREATE when the load fails.
		b := realBackend(t)
		name := dmsnap.NamePrefix + e.prefix + "refused"
		bad := dmsnap.Target{Length: 8, Type: "snapshot", Params: "7:1048575 7:1048574 P 8"}
		if _, err := b.CreateDM(ctx, name, fmt.Sprintf("dmsnap-test-refused-%d", os.Getpid()), []dmsnap.Target{bad}); err == nil {
			t.Fatal("a table over missing devices was accepted")
		}
		requireNoResidue(t, e.root, e.prefix)
	})

	t.Run("leaks", func(t *testing.T) {
		b := realBackend(t)
		leak := filepath.Join(e.root, "leak.cow")
		if err := os.WriteFile(leak, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(leak, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		l, h, err := b.AttachLoop(ctx, f, false)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		foreignUUID := fmt.Sprintf("dmsnap-test-foreign-%d", os.Getpid())
		foreign := dmsnap.NamePrefix + e.prefix + "foreign"
		if _, err := b.CreateDM(ctx, foreign, foreignUUID, []dmsnap.Target{{Length: 8, Type: "error"}}); err != nil {
			h.Close()
			t.Fatal(err)
		}
		defer func() { _ = b.RemoveDM(ctx, foreignUUID) }()
		// The hold stays open, as if the process that bound the loop were
		// still alive (IoctlBackend's loops would autoclear at its close):
		// Reconcile must find the loop and detach it (lazily, here).
		defer h.Close()
		rep, err := e.m.Reconcile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := rep.String()
		if !strings.Contains(s, "unknown dm device "+foreign) {
			t.Errorf("the foreign device is not reported:\n%s", s)
		}
		if !strings.Contains(s, "leaked loop "+l.Path+" ("+leak+"): detached") {
			t.Errorf("the leaked loop is not reported:\n%s", s)
		}
		// The detach was lazy: the loop goes at the hold's close.
		h.Close()
		waitGone(t, l.Path)
		if r := residue(e.root, e.prefix); len(r) != 1 || !strings.Contains(r[0], foreign) {
			t.Errorf("after reconcile: %q (want only the foreign device, left alone)", r)
		}
		if err := b.RemoveDM(ctx, foreignUUID); err != nil {
			t.Fatal(err)
		}
		requireNoResidue(t, e.root, e.prefix)
	})
}
