package dmsnap_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/dmsnap"
	"banger/internal/dmsnap/dmsnaptest"
	"golang.org/x/sys/unix"
)

// filesEnv is a Manager without a root, as the helper runs it: files come
// open, from anywhere.
type filesEnv struct {
	dir  string
	fake *dmsnaptest.Fake
	m    *dmsnap.Manager
	// restart simulates the helper restarting on the same kernel state.
	restart func()
}

func newFilesEnv(t *testing.T) *filesEnv {
	t.Helper()
	e := &filesEnv{dir: t.TempDir(), fake: dmsnaptest.NewFake()}
	if err := os.WriteFile(filepath.Join(e.dir, "base.img"), make([]byte, baseSize), 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	open := func() {
		m, err := dmsnap.Open(dmsnap.Config{StateDir: state, Backend: e.fake, RemoveAttempts: 2, RemoveDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		e.m = m
	}
	open()
	t.Cleanup(func() { e.m.Close() })
	e.restart = func() { e.m.Close(); open() }
	return e
}

// open opens the base read-only and a new sparse COW file with flag.
func (e *filesEnv) open(t *testing.T, id string, cowFlag int) dmsnap.Spec {
	t.Helper()
	base, err := os.Open(filepath.Join(e.dir, "base.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	p := filepath.Join(e.dir, id+".cow")
	if _, err := os.Stat(p); err != nil {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, dmsnap.DefaultCOWSize(baseSize)); err != nil {
			t.Fatal(err)
		}
	}
	cow, err := os.OpenFile(p, cowFlag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cow.Close() })
	return dmsnap.Spec{ID: id, Base: base.Name(), COW: cow.Name(), BaseFile: base, COWFile: cow}
}

func (e *filesEnv) state() string {
	return strings.ReplaceAll(tokenRE.ReplaceAllString(e.fake.String(), "$1-TOKEN"), e.dir, "$DIR")
}

func TestCreateFromOpenFiles(t *testing.T) {
	e := newFilesEnv(t)
	ctx := context.Background()
	s := e.open(t, "vm1", os.O_RDWR)
	got, err := e.m.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	// The caller's files are its own: closing them changes nothing.
	s.BaseFile.Close()
	s.COWFile.Close()
	if got.State != dmsnap.StateActive || got.COW.Path != filepath.Join(e.dir, "vm1.cow") || got.COW.Ino == 0 {
		t.Errorf("entry = %+v", got)
	}
	want := "loop0 ro autoclear opens=1 $DIR/base.img\n" +
		"loop1 rw autoclear opens=1 $DIR/vm1.cow\n" +
		"dm-0 banger-vm1 uuid=banger-dmsnap-vm1-TOKEN open=0 table=[0 128 snapshot 7:0 7:1 P 8]\n"
	if st := e.state(); st != want {
		t.Errorf("state\n%s\nwant\n%s", st, want)
	}
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if st := e.state(); st != "" {
		t.Errorf("left: %s", st)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "vm1.cow")); err != nil {
		t.Errorf("the COW file is the caller's: %v", err)
	}
}

func TestOpenFilesRefusals(t *testing.T) {
	e := newFilesEnv(t)
	ctx := context.Background()
	pathOnly := dmsnap.Spec{ID: "p", Base: filepath.Join(e.dir, "base.img"), COW: filepath.Join(e.dir, "p.cow")}
	readOnly := e.open(t, "ro", os.O_RDONLY)
	onlyBase := e.open(t, "half", os.O_RDWR)
	onlyBase.COWFile = nil
	linked := e.open(t, "ln", os.O_RDWR)
	if err := os.Link(filepath.Join(e.dir, "ln.cow"), filepath.Join(e.dir, "ln2.cow")); err != nil {
		t.Fatal(err)
	}
	same := e.open(t, "same", os.O_RDWR)
	sameBase, err := os.OpenFile(filepath.Join(e.dir, "base.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sameBase.Close()
	same.COWFile = sameBase
	pathFD, err := unix.Open(filepath.Join(e.dir, "base.img"), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opath := e.open(t, "opath", os.O_RDWR)
	opath.BaseFile = os.NewFile(uintptr(pathFD), "base.img")
	defer opath.BaseFile.Close()
	for _, tc := range []struct {
		name string
		s    dmsnap.Spec
		want string
	}{
		{"paths on a files-only manager", pathOnly, "takes open files only"},
		{"cow open read-only", readOnly, "not open read-write"},
		{"one file only", onlyBase, "give both"},
		{"cow with two links", linked, "has 2 links"},
		{"cow is the base", same, "is the base image itself"},
		{"base is an O_PATH fd", opath, "not open for reading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.m.Create(ctx, tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
			if st := e.state(); st != "" {
				t.Errorf("left: %s", st)
			}
			if es := e.m.Entries(); len(es) != 0 {
				t.Errorf("entries: %+v", es)
			}
		})
	}
}

// TestReconcileFindsUnrecordedLoopByIdentity: without a root to scan, a
// loop the crash left before it was recorded is found by the identity of
// the entry's files.
func TestReconcileFindsUnrecordedLoopByIdentity(t *testing.T) {
	e := newFilesEnv(t)
	e.fake.NoAutoclear = true
	dmsnap.SetCrashHook(e.m, func(p string) bool { return p == dmsnap.CrashAfterBaseAttach })
	if _, err := e.m.Create(context.Background(), e.open(t, "vm1", os.O_RDWR)); !errors.Is(err, dmsnap.ErrCrashed) {
		t.Fatalf("err = %v, want the simulated crash", err)
	}
	if st := e.state(); st != "loop0 ro opens=0 $DIR/base.img\n" {
		t.Fatalf("state at the crash: %q", st)
	}
	e.restart()
	rep, err := e.m.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := "entry vm1 (creating): interrupted while creating; removed []; dropped\n" +
		"leaked loop /dev/loop0 ($DIR/base.img): detached\n"
	if got := strings.ReplaceAll(rep.String(), e.dir, "$DIR"); got != want {
		t.Errorf("report\n%s\nwant\n%s", got, want)
	}
	if st := e.state(); st != "" {
		t.Errorf("left: %s", st)
	}
}

// TestCreateOpen: the device is opened while its id is in flight (a remove
// of it is refused meanwhile), and a failed open undoes the snapshot.
func TestCreateOpen(t *testing.T) {
	e := newFilesEnv(t)
	ctx := context.Background()
	devFile := filepath.Join(e.dir, "dm-node")
	if err := os.WriteFile(devFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var removeErr error
	got, dev, err := e.m.CreateOpen(ctx, e.open(t, "vm1", os.O_RDWR), func(en dmsnap.Entry) (*os.File, error) {
		if en.State != dmsnap.StateActive || en.DM.Major == 0 {
			t.Errorf("open saw entry %+v", en)
		}
		removeErr = e.m.Remove(ctx, "vm1")
		return os.Open(devFile)
	})
	if err != nil {
		t.Fatal(err)
	}
	dev.Close()
	if !errors.Is(removeErr, dmsnap.ErrInUse) {
		t.Errorf("a remove during the open: %v, want ErrInUse", removeErr)
	}
	if got.State != dmsnap.StateActive {
		t.Errorf("entry = %+v", got)
	}
	if err := e.m.Remove(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}

	_, dev, err = e.m.CreateOpen(ctx, e.open(t, "vm2", os.O_RDWR), func(dmsnap.Entry) (*os.File, error) {
		return nil, errors.New("not the device made")
	})
	if err == nil || dev != nil || !strings.Contains(err.Error(), "open device: not the device made") {
		t.Fatalf("failed open: %v, %v", dev, err)
	}
	if st := e.state(); st != "" {
		t.Errorf("left after a failed open:\n%s", st)
	}
	if es := e.m.Entries(); len(es) != 0 {
		t.Errorf("entries after a failed open: %+v", es)
	}
}

// TestReconcileLeavesOthersLoops: when loops are listed by name only (the
// ioctl backend), a loop someone else bound to another file of the same
// name is not detached as a leak: the detach checks the journal's inode.
func TestReconcileLeavesOthersLoops(t *testing.T) {
	e := newFilesEnv(t)
	e.fake.NoAutoclear, e.fake.NoLoopIdentity = true, true
	dmsnap.SetCrashHook(e.m, func(p string) bool { return p == dmsnap.CrashAfterBaseAttach })
	if _, err := e.m.Create(context.Background(), e.open(t, "vm1", os.O_RDWR)); !errors.Is(err, dmsnap.ErrCrashed) {
		t.Fatalf("err = %v, want the simulated crash", err)
	}
	// An administrator replaces the image and inspects the new one.
	base := filepath.Join(e.dir, "base.img")
	if err := os.Remove(base); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base, make([]byte, baseSize), 0o644); err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, hold, err := e.fake.AttachLoop(context.Background(), other, true)
	if err != nil {
		t.Fatal(err)
	}
	hold.Close()
	e.restart()
	if _, err := e.m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.state(); st != "loop1 ro opens=0 $DIR/base.img\n" {
		t.Errorf("after reconcile\n%s\nwant only the administrator's loop1", st)
	}
}
