package dmsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/privop"
)

// Defaults of Config.
const (
	DefaultRemoveAttempts = 10
	DefaultRemoveDelay    = 200 * time.Millisecond
)

// Errors of Manager; test with errors.Is.
var (
	// ErrInUse means the id has a journal entry (a live device, one being
	// made or removed, or a faulty one whose teardown is pending).
	ErrInUse = errors.New("id in use")
)

// Config configures a Manager.
type Config struct {
	// Root holds the base images and COW files named by path; every such
	// file must be a regular file strictly inside it, reached without
	// symlinks. It must be dedicated to banger: Reconcile detaches any loop
	// bound to a file under Root that the journal does not know. Empty
	// means files come open only (Spec.BaseFile and Spec.COWFile), as in
	// the root helper, which never opens a path a caller names.
	Root string
	// StateDir holds the journal and its lock (root-owned, like the
	// helper's ledger).
	StateDir string
	Backend  Backend
	// RemoveAttempts and RemoveDelay bound the retries of a busy dm
	// device (udev or blkid may hold it for a moment after its user
	// closed it): 10 tries 200 ms apart, about 2 s, by default.
	RemoveAttempts int
	RemoveDelay    time.Duration
}

// Spec describes one VM's snapshot.
type Spec struct {
	ID string
	// Base is the read-only origin image: a regular file under Root whose
	// size is a multiple of 512 bytes.
	Base string
	// COW is the VM's copy-on-write file under Root.
	COW string
	// Resume reuses an existing COW file: its persistent exception store
	// brings the disk back as the VM left it. Without Resume the COW file
	// must not exist; it is created sparse (0600), COWSize bytes.
	Resume bool
	// COWSize is the size of a new COW file; 0 means DefaultCOWSize.
	COWSize int64
	// ChunkSectors is the snapshot chunk size; 0 means 8 (4 KiB).
	ChunkSectors uint32
	// BaseFile and COWFile, when set, are the files already open: the
	// helper gets them as fds from bangerd, and their access modes are the
	// proof bangerd may use them. Base and COW are then only names for
	// messages; Resume and COWSize do not apply (the caller made the COW
	// file). COWFile must be open read-write. The Manager keeps its own
	// duplicates, so the caller closes these when it likes.
	BaseFile *os.File
	COWFile  *os.File
}

// DefaultCOWSize is a COW size that holds a full rewrite of an origin of
// originBytes (privop.SnapshotCOWSize: bangerd sizes the files it passes
// the helper the same way).
func DefaultCOWSize(originBytes int64) int64 { return privop.SnapshotCOWSize(originBytes) }

// Manager makes and removes snapshots, recording every step in the
// journal. It is safe for concurrent use; only one Manager may use a state
// directory at a time (it holds a lock).
type Manager struct {
	root     string
	b        Backend
	attempts int
	delay    time.Duration
	lockFile *os.File

	// opMu lets Create and Remove run concurrently and Reconcile alone,
	// so Reconcile never takes an in-flight step for a leak.
	opMu sync.RWMutex

	mu       sync.Mutex // guards j and inflight
	j        *journal
	inflight map[string]bool

	// crash, set by tests only, simulates the process dying at a point.
	crash func(point string) bool
}

// Open loads the journal in cfg.StateDir (created 0700 if missing) and
// locks it. Call Reconcile before serving requests.
func Open(cfg Config) (*Manager, error) {
	if cfg.Backend == nil {
		return nil, errors.New("open dmsnap: no backend")
	}
	if cfg.Root != "" {
		if !filepath.IsAbs(cfg.Root) || filepath.Clean(cfg.Root) != cfg.Root || cfg.Root == "/" {
			return nil, fmt.Errorf("open dmsnap: root %q: want a clean absolute path other than /", cfg.Root)
		}
		fi, err := os.Lstat(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("open dmsnap: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("open dmsnap: root %s is not a directory (a symlink is refused)", cfg.Root)
		}
	}
	if cfg.StateDir == "" {
		return nil, errors.New("open dmsnap: no state directory")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("open dmsnap: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.StateDir, "dmsnap.lock"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open dmsnap: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open dmsnap: lock %s (another manager uses it?): %w", cfg.StateDir, err)
	}
	j, err := openJournal(cfg.StateDir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open dmsnap: %w", err)
	}
	m := &Manager{
		root: cfg.Root, b: cfg.Backend, attempts: cfg.RemoveAttempts, delay: cfg.RemoveDelay,
		lockFile: lock, j: j, inflight: map[string]bool{},
	}
	if m.attempts <= 0 {
		m.attempts = DefaultRemoveAttempts
	}
	if m.delay <= 0 {
		m.delay = DefaultRemoveDelay
	}
	return m, nil
}

// Close releases the state directory's lock.
func (m *Manager) Close() error { return m.lockFile.Close() }

// Get returns id's entry.
func (m *Manager) Get(id string) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.j.entries[id]
	return e, ok
}

// Entries returns every entry, sorted by id.
func (m *Manager) Entries() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.j.entries))
	for _, e := range m.j.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// record writes e to the journal.
func (m *Manager) record(e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.j.set(e)
}

func (m *Manager) forget(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.j.drop(id)
}

func (m *Manager) done(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inflight, id)
}

// Crash points (see crashed).
const (
	crashAfterBaseAttach   = "after-base-attach" // base loop bound, not recorded
	crashAfterBaseLoop     = "after-base-loop"   // base loop recorded
	crashAfterCOWLoop      = "after-cow-loop"    // COW loop recorded
	crashAfterDMCreate     = "after-dm-create"   // dm device made, not recorded active
	crashAfterMarkRemoving = "after-mark-removing"
	crashAfterDMRemove     = "after-dm-remove" // dm device gone, loops not detached
)

var errCrashed = errors.New("simulated crash")

// crashed reports whether a test simulates the process dying at point. A
// dying process's descriptors are closed by the kernel, so the loop holds
// are closed; nothing else (no undo, no journal write) happens.
func (m *Manager) crashed(point string, holds []io.Closer) bool {
	if m.crash == nil || !m.crash(point) {
		return false
	}
	for _, h := range holds {
		h.Close()
	}
	return true
}

// openFiles opens s's base and COW files under the root and checks them.
// created reports a COW file made here (removed again if Create fails).
func (m *Manager) openFiles(s Spec, chunk uint32) (base, cow *os.File, baseID, cowID File, sectors uint64, created bool, err error) {
	var given *os.File // the COW duplicate, until the checks below own it
	switch {
	case s.BaseFile != nil || s.COWFile != nil:
		base, given, err = dupFiles(s)
	case m.root == "":
		err = errors.New("this manager takes open files only, not paths")
	default:
		base, err = openUnder(m.root, s.Base, unix.O_RDONLY, 0)
	}
	if err != nil {
		return nil, nil, File{}, File{}, 0, false, fmt.Errorf("open base: %w", err)
	}
	defer func() {
		if err != nil {
			base.Close()
		}
	}()
	if given != nil {
		defer func() {
			if err != nil {
				given.Close()
			}
		}()
	}
	baseID, size, _, err := identify(base)
	if err != nil {
		return nil, nil, File{}, File{}, 0, false, err
	}
	if size <= 0 || size%SectorSize != 0 || size < int64(chunk)*SectorSize {
		return nil, nil, File{}, File{}, 0, false, fmt.Errorf("base %s: size %d: want a non-zero multiple of 512 bytes, at least one chunk", s.Base, size)
	}
	switch {
	case given != nil:
		cow = given
	case s.Resume:
		cow, err = openUnder(m.root, s.COW, unix.O_RDWR, 0)
	default:
		cow, err = openUnder(m.root, s.COW, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
		created = err == nil
		if errors.Is(err, os.ErrExist) {
			err = fmt.Errorf("cow file %s exists; pass Resume to reuse it: %w", s.COW, err)
		}
	}
	if err != nil {
		return nil, nil, File{}, File{}, 0, false, fmt.Errorf("open cow: %w", err)
	}
	fail := func(err error) (*os.File, *os.File, File, File, uint64, bool, error) {
		if given == nil {
			cow.Close() // given is closed by the deferred cleanup
		}
		if created {
			os.Remove(s.COW)
		}
		return nil, nil, File{}, File{}, 0, false, err
	}
	if created {
		cs := s.COWSize
		if cs == 0 {
			cs = DefaultCOWSize(size)
		}
		if err := cow.Truncate(cs); err != nil {
			return fail(fmt.Errorf("size cow file: %w", err))
		}
	}
	cowID, cowSize, nlink, err := identify(cow)
	if err != nil {
		return fail(err)
	}
	switch {
	case cowID.Dev == baseID.Dev && cowID.Ino == baseID.Ino:
		return fail(fmt.Errorf("cow %s is the base image itself", s.COW))
	case nlink != 1:
		return fail(fmt.Errorf("cow %s has %d links: a writable backing file must have one", s.COW, nlink))
	case cowSize < 4*int64(chunk)*SectorSize:
		return fail(fmt.Errorf("cow %s: %d bytes is too small: want at least 4 chunks", s.COW, cowSize))
	}
	return base, cow, baseID, cowID, uint64(size / SectorSize), created, nil
}

// Create makes id's snapshot and returns its active entry (the dm device
// in DM). Every step is recorded before the next; on failure, what was
// done is undone and the entry dropped, or kept faulty (its id blocked) if
// the undo failed too.
func (m *Manager) Create(ctx context.Context, s Spec) (Entry, error) {
	e, _, err := m.create(ctx, s, nil)
	return e, err
}

// CreateOpen is Create that also opens the new device with open, while
// the id is still in flight: no Remove of the same id can run between the
// device's creation and its opening, so the device open returns is the one
// made here (its number cannot have passed to another device). If open
// fails, the snapshot is undone.
func (m *Manager) CreateOpen(ctx context.Context, s Spec, open func(Entry) (*os.File, error)) (Entry, *os.File, error) {
	return m.create(ctx, s, open)
}

func (m *Manager) create(ctx context.Context, s Spec, open func(Entry) (*os.File, error)) (Entry, *os.File, error) {
	name, err := DeviceName(s.ID)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("create snapshot: %w", err)
	}
	chunk := s.ChunkSectors
	if chunk == 0 {
		chunk = DefaultChunkSectors
	}
	if err := checkChunk(chunk); err != nil {
		return Entry{}, nil, fmt.Errorf("create %s: %w", name, err)
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	// Checked again, authoritatively, when the entry is recorded; early
	// here so an id in use is reported as such, not as a COW file that
	// exists.
	if err := m.checkFree(s.ID); err != nil {
		return Entry{}, nil, fmt.Errorf("create %s: %w", name, err)
	}

	base, cow, baseID, cowID, sectors, created, err := m.openFiles(s, chunk)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("create %s: %w", name, err)
	}
	defer base.Close()
	defer cow.Close()
	removeCreated := func() {
		if created {
			// Only the file made here: same inode, not a replacement.
			var st unix.Stat_t
			if unix.Lstat(s.COW, &st) == nil && st.Ino == cowID.Ino && uint64(st.Dev) == cowID.Dev {
				os.Remove(s.COW)
			}
		}
	}
	now := time.Now().UTC()
	e := Entry{
		ID: s.ID, Name: name, UUID: deviceUUID(s.ID, newToken()), State: StateCreating,
		Base: baseID, COW: cowID, Sectors: sectors, ChunkSectors: chunk, CreatedAt: now,
	}
	if err := m.begin(e); err != nil {
		removeCreated()
		return Entry{}, nil, fmt.Errorf("create %s: %w", name, err)
	}
	defer m.done(s.ID)

	c := creation{m: m, e: e}
	fail := func(step string, err error) (Entry, *os.File, error) {
		if uerr := c.undo(ctx); uerr != nil {
			return Entry{}, nil, fmt.Errorf("create %s: %s: %w (undo failed, left faulty: %w)", name, step, err, uerr)
		}
		removeCreated()
		return Entry{}, nil, fmt.Errorf("create %s: %s: %w", name, step, err)
	}

	// Two writers on one COW file would corrupt it: refuse one still bound
	// to a loop the journal does not know (a leak from a crash, which
	// Reconcile detaches).
	loops, err := m.b.Loops(ctx)
	if err != nil {
		return fail("list loops", err)
	}
	for _, l := range loops {
		if cowID.Matches(l) {
			return fail("check cow", fmt.Errorf("%s is already bound to %s (run reconcile)", s.COW, l.Path))
		}
	}

	bl, bh, err := m.b.AttachLoop(ctx, base, true)
	if err != nil {
		return fail("attach base loop", err)
	}
	c.attached(bl, baseID, bh)
	if m.crashed(crashAfterBaseAttach, c.holds) {
		return Entry{}, nil, errCrashed
	}
	c.e.BaseLoop = LoopRef{Path: bl.Path, Major: bl.Major, Minor: bl.Minor}
	if err := m.record(c.e); err != nil {
		return fail("record base loop", err)
	}
	if m.crashed(crashAfterBaseLoop, c.holds) {
		return Entry{}, nil, errCrashed
	}

	cl, ch, err := m.b.AttachLoop(ctx, cow, false)
	if err != nil {
		return fail("attach cow loop", err)
	}
	c.attached(cl, cowID, ch)
	c.e.COWLoop = LoopRef{Path: cl.Path, Major: cl.Major, Minor: cl.Minor}
	if err := m.record(c.e); err != nil {
		return fail("record cow loop", err)
	}
	if m.crashed(crashAfterCOWLoop, c.holds) {
		return Entry{}, nil, errCrashed
	}

	tgt, err := SnapshotTarget(sectors, bl.DevNum(), cl.DevNum(), chunk)
	if err != nil {
		return fail("build table", err)
	}
	c.dmTried = true
	d, err := m.b.CreateDM(ctx, name, c.e.UUID, []Target{tgt})
	if err != nil {
		return fail("create dm device", err)
	}
	if m.crashed(crashAfterDMCreate, c.holds) {
		return Entry{}, nil, errCrashed
	}
	c.e.DM = DMRef{Major: d.Major, Minor: d.Minor, Path: d.Path}
	c.e.State = StateActive
	if err := m.record(c.e); err != nil {
		return fail("record active", err)
	}
	var dev *os.File
	if open != nil {
		if dev, err = open(c.e); err != nil {
			return fail("open device", err)
		}
	}
	// The dm table holds both loops now: with autoclear they go away by
	// themselves once the dm device is removed.
	for _, h := range c.holds {
		h.Close()
	}
	return c.e, dev, nil
}

func (m *Manager) checkFree(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeLocked(id)
}

// freeLocked refuses an id with an entry: a faulty one included, so a name
// is never reused before its teardown completed.
func (m *Manager) freeLocked(id string) error {
	old, ok := m.j.entries[id]
	if !ok {
		return nil
	}
	if old.State == StateFaulty {
		return fmt.Errorf("%w: %s is faulty, its teardown is pending (%s): remove or reconcile first", ErrInUse, old.Name, old.Error)
	}
	return fmt.Errorf("%w: %s is %s", ErrInUse, old.Name, old.State)
}

// begin records e (state creating) unless its id has an entry.
func (m *Manager) begin(e Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.freeLocked(e.ID); err != nil {
		return err
	}
	// Authoritative, unlike the scan of bound loops: a COW file has one
	// writer, and no VM's COW is another's base.
	same := func(a, b File) bool { return a.Dev == b.Dev && a.Ino == b.Ino }
	for _, o := range m.j.entries {
		if same(o.COW, e.COW) || same(o.Base, e.COW) || same(o.COW, e.Base) {
			return fmt.Errorf("%w: %s already uses %s or %s", ErrInUse, o.Name, e.COW.Path, e.Base.Path)
		}
	}
	if err := m.j.set(e); err != nil {
		return err
	}
	m.inflight[e.ID] = true
	return nil
}

// creation is the undo log of one Create.
type creation struct {
	m       *Manager
	e       Entry
	loops   []LoopRef
	files   []File
	holds   []io.Closer
	dmTried bool
}

func (c *creation) attached(l Loop, f File, h io.Closer) {
	c.loops = append(c.loops, LoopRef{Path: l.Path, Major: l.Major, Minor: l.Minor})
	c.files = append(c.files, f)
	c.holds = append(c.holds, h)
}

// undo removes the dm device (by uuid) if one may exist, releases and
// detaches the loops (newest first) and drops the entry; if any step
// fails, the entry is kept as faulty with the error, so the id is not
// reused before Reconcile or Remove finish the teardown.
func (c *creation) undo(ctx context.Context) error {
	var errs []error
	if c.dmTried {
		if _, err := c.m.removeDM(ctx, c.e.UUID); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range c.holds {
		h.Close()
	}
	if len(errs) == 0 {
		for i := len(c.loops) - 1; i >= 0; i-- {
			if _, err := c.m.detach(ctx, c.loops[i].Path, c.files[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		if err := c.m.forget(c.e.ID); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	uerr := errors.Join(errs...)
	c.e.State = StateFaulty
	c.e.Error = "undo of a failed create: " + uerr.Error()
	if err := c.m.record(c.e); err != nil {
		uerr = errors.Join(uerr, err)
	}
	return uerr
}

// removeDM removes the device with uuid, retrying while it is busy. It
// reports whether a device was removed; one already gone is fine.
func (m *Manager) removeDM(ctx context.Context, uuid string) (bool, error) {
	start := time.Now()
	for i := 1; ; i++ {
		err := m.b.RemoveDM(ctx, uuid)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, ErrNotFound):
			return false, nil
		case !errors.Is(err, ErrBusy):
			return false, err
		case i >= m.attempts:
			return false, fmt.Errorf("dm device %s still busy after %d attempts over %s: %w", uuid, i, time.Since(start).Round(time.Millisecond), err)
		}
		t := time.NewTimer(m.delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, fmt.Errorf("remove dm device %s: %w (last: %w)", uuid, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// detach detaches dev if it is still bound to f; gone is fine.
func (m *Manager) detach(ctx context.Context, dev string, f File) (bool, error) {
	err := m.b.DetachLoop(ctx, dev, f)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// teardown removes what of e may exist: the dm device (by uuid), the
// recorded loops if still bound to the recorded files, and any other loop
// bound to e's COW file (bound before a crash could record it). It
// returns what it removed.
func (m *Manager) teardown(ctx context.Context, e Entry) ([]string, error) {
	var removed []string
	ok, err := m.removeDM(ctx, e.UUID)
	if err != nil {
		return removed, err
	}
	if ok {
		removed = append(removed, "dm "+e.Name)
	}
	if m.crashed(crashAfterDMRemove, nil) {
		return removed, errCrashed
	}
	var errs []error
	for _, l := range []struct {
		ref LoopRef
		f   File
	}{{e.COWLoop, e.COW}, {e.BaseLoop, e.Base}} {
		if l.ref.Path == "" {
			continue
		}
		ok, err := m.detach(ctx, l.ref.Path, l.f)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed = append(removed, "loop "+l.ref.Path+" ("+l.f.Path+")")
		}
	}
	loops, err := m.b.Loops(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range loops {
		if l.Path == e.COWLoop.Path || !e.COW.Matches(l) {
			continue
		}
		ok, err := m.detach(ctx, l.Path, e.COW)
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			removed = append(removed, "loop "+l.Path+" ("+e.COW.Path+", unrecorded)")
		}
	}
	return removed, errors.Join(errs...)
}

// Remove tears id's snapshot down: marks it removing, removes the dm device
// (retrying while busy), detaches its loops and drops the entry. An id
// without an entry is already gone: nil, and nothing is touched (a device
// the journal does not record is never removed). If the device stays
// busy, the entry is kept as removing and the error wraps ErrBusy; call
// Remove again later. The COW file is left to the caller.
func (m *Manager) Remove(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("remove snapshot: %w", err)
	}
	m.opMu.RLock()
	defer m.opMu.RUnlock()
	e, ok, err := m.beginRemove(id)
	if err != nil || !ok {
		return err
	}
	defer m.done(id)
	if m.crashed(crashAfterMarkRemoving, nil) {
		return errCrashed
	}
	if _, err := m.teardown(ctx, e); err != nil {
		if errors.Is(err, errCrashed) {
			return err
		}
		e.Error = err.Error()
		if rerr := m.record(e); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("remove %s: %w", e.Name, err)
	}
	if err := m.forget(id); err != nil {
		return fmt.Errorf("remove %s: %w", e.Name, err)
	}
	return nil
}

func (m *Manager) beginRemove(id string) (Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.j.entries[id]
	if !ok {
		return Entry{}, false, nil
	}
	if m.inflight[id] {
		return Entry{}, false, fmt.Errorf("remove %s: %w: another operation on it is in progress", e.Name, ErrInUse)
	}
	// A creating entry with nothing in flight was left by a crash: tearing
	// it down is what Reconcile would do.
	e.State = StateRemoving
	if err := m.j.set(e); err != nil {
		return Entry{}, false, fmt.Errorf("remove %s: %w", e.Name, err)
	}
	m.inflight[id] = true
	return m.j.entries[id], true, nil
}

// Action is what Reconcile did about one journal entry.
type Action struct {
	ID     string
	Name   string
	Was    State
	Reason string
	// Removed lists what was torn down ("dm banger-x", "loop /dev/loop3
	// (/root/x.cow)").
	Removed []string
	// Err is set when the teardown failed: the entry stays faulty (its id
	// blocked) for the next Reconcile or Remove.
	Err string
}

// LeakedLoop is a loop bound to a file under the root that no entry
// records (bound just before a crash could record it).
type LeakedLoop struct {
	Loop     Loop
	Detached bool
	Err      string
}

// Report is what Reconcile found and did.
type Report struct {
	Actions     []Action
	LeakedLoops []LeakedLoop
	// LeakedDM are dm devices named banger-* whose uuid no entry records.
	// They are left alone: a name is no proof of ownership, and no crash
	// of dmsnap can make one (the uuid is recorded before the device).
	LeakedDM []DMDevice
}

// Clean reports whether Reconcile found nothing to do.
func (r Report) Clean() bool {
	return len(r.Actions) == 0 && len(r.LeakedLoops) == 0 && len(r.LeakedDM) == 0
}

// String renders the report a line per finding, for logs and tests.
func (r Report) String() string {
	var b strings.Builder
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "entry %s (%s): %s; removed [%s]", a.ID, a.Was, a.Reason, strings.Join(a.Removed, ", "))
		if a.Err != "" {
			fmt.Fprintf(&b, "; kept faulty: %s", a.Err)
		} else {
			b.WriteString("; dropped")
		}
		b.WriteByte('\n')
	}
	for _, l := range r.LeakedLoops {
		fmt.Fprintf(&b, "leaked loop %s (%s)", l.Loop.Path, l.Loop.Backing)
		switch {
		case l.Detached:
			b.WriteString(": detached")
		case l.Err != "":
			fmt.Fprintf(&b, ": detach failed: %s", l.Err)
		default:
			b.WriteString(": gone")
		}
		b.WriteByte('\n')
	}
	for _, d := range r.LeakedDM {
		fmt.Fprintf(&b, "unknown dm device %s (uuid %q): left alone\n", d.Name, d.UUID)
	}
	return b.String()
}

// Reconcile brings the journal and the kernel back in line; run it at
// start-up, before Create or Remove (it waits for those in flight). Every
// entry not active, and every active one whose dm device is gone (after a
// reboot), is marked faulty, torn down and dropped; one whose teardown
// fails stays faulty, so its id is not reused until a later Reconcile or
// Remove completes it. Then loops bound to files under the root that no
// entry records are detached, and banger-* dm devices no entry records
// are reported. The error is for failures to look (listing, journal);
// teardown failures are in the report.
func (m *Manager) Reconcile(ctx context.Context) (Report, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	var rep Report
	dms, err := m.b.DMDevices(ctx, NamePrefix)
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	// Files of every entry, before any is dropped: a loop bound to one of
	// them that no remaining entry records was left by a crash between
	// attaching it and recording it (the base loop of a half-made
	// snapshot, say), wherever the file lives.
	var files []File
	for _, e := range m.Entries() {
		files = append(files, e.Base, e.COW)
	}
	// ours returns the entry file l is bound to: detaching checks that
	// identity again on the device, so a loop someone else bound to a file
	// of the same name is left alone.
	ours := func(l Loop) (File, bool) {
		i := slices.IndexFunc(files, func(f File) bool { return f.Ino != 0 && f.Matches(l) })
		if i < 0 {
			return File{}, false
		}
		return files[i], true
	}
	live := map[string]bool{}
	for _, d := range dms {
		live[d.UUID] = true
	}
	for _, e := range m.Entries() {
		if e.State == StateActive && live[e.UUID] {
			continue
		}
		a := Action{ID: e.ID, Name: e.Name, Was: e.State}
		switch e.State {
		case StateActive:
			a.Reason = "active but its dm device is gone"
		case StateFaulty:
			a.Reason = "faulty: " + e.Error
		default:
			a.Reason = "interrupted while " + string(e.State)
		}
		e.State = StateFaulty
		e.Error = a.Reason
		if err := m.record(e); err != nil {
			return rep, fmt.Errorf("reconcile %s: %w", e.Name, err)
		}
		removed, terr := m.teardown(ctx, e)
		a.Removed = removed
		if terr != nil {
			a.Err = terr.Error()
			e.Error = "teardown: " + terr.Error()
			if err := m.record(e); err != nil {
				return rep, fmt.Errorf("reconcile %s: %w", e.Name, err)
			}
		} else if err := m.forget(e.ID); err != nil {
			return rep, fmt.Errorf("reconcile %s: %w", e.Name, err)
		}
		rep.Actions = append(rep.Actions, a)
	}

	known := map[string]bool{}
	knownUUID := map[string]bool{}
	for _, e := range m.Entries() {
		known[e.BaseLoop.Path] = true
		known[e.COWLoop.Path] = true
		knownUUID[e.UUID] = true
	}
	loops, err := m.b.Loops(ctx)
	if err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	for _, l := range loops {
		if known[l.Path] {
			continue
		}
		want, isOurs := ours(l)
		if !isOurs {
			if m.root == "" || !strings.HasPrefix(l.Backing, m.root+"/") {
				continue
			}
			want = File{Path: l.Backing, Dev: l.BackingDev, Ino: l.BackingIno}
		}
		ll := LeakedLoop{Loop: l}
		ok, err := m.detach(ctx, l.Path, want)
		ll.Detached = ok
		if err != nil {
			ll.Err = err.Error()
		}
		rep.LeakedLoops = append(rep.LeakedLoops, ll)
	}
	if dms, err = m.b.DMDevices(ctx, NamePrefix); err != nil {
		return rep, fmt.Errorf("reconcile: %w", err)
	}
	for _, d := range dms {
		if !knownUUID[d.UUID] {
			rep.LeakedDM = append(rep.LeakedDM, d)
		}
	}
	return rep, nil
}
