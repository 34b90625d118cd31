// Package dmsnaptest holds the test doubles of internal/dmsnap: Fake, a
// stateful stand-in for the kernel's loop and device-mapper state that
// implements dmsnap.Backend and, through Runner, answers the losetup and
// dmsetup argv ExecBackend runs; and Injector, which wraps any Backend
// (the fake or the real one) to fail chosen calls.
package dmsnaptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"banger/internal/dmsnap"

	"golang.org/x/sys/unix"
)

// Device numbers the fake hands out, as the kernel would.
const (
	LoopMajor = 7
	DMMajor   = 253
)

// Fake models loop and dm devices: which file each loop is bound to, who
// holds it open, the dm devices with their tables, uuids and openers. It
// follows the kernel where Manager depends on it: autoclear detaches a
// loop at its last close, detaching a loop still held is lazy, removing
// an open dm device is EBUSY, a dm table holds its loops open.
type Fake struct {
	// NoAutoclear makes AttachLoop ignore autoclear, like losetup: such
	// loops stay until detached.
	NoAutoclear bool
	// NoLoopIdentity makes Loops report backing files by name only, as
	// the ioctl backend does (sysfs has no inode); DetachLoop still checks
	// identity, as the kernel's LOOP_GET_STATUS64 lets it.
	NoLoopIdentity bool

	mu    sync.Mutex
	loops map[int]*fakeLoop
	dms   map[string]*fakeDM
	busy  map[string]int
}

type fakeLoop struct {
	n         int
	file      dmsnap.File
	ro        bool
	autoclear bool
	opens     int
	holders   map[string]bool
}

type fakeDM struct {
	name, uuid string
	minor      int
	table      []dmsnap.Target
	opens      int
	loops      []int
}

// NewFake returns an empty fake.
func NewFake() *Fake {
	return &Fake{loops: map[int]*fakeLoop{}, dms: map[string]*fakeDM{}, busy: map[string]int{}}
}

func errno(what string, e unix.Errno, sentinel error) error {
	if sentinel != nil {
		return fmt.Errorf("%s: %w: %w", what, sentinel, e)
	}
	return fmt.Errorf("%s: %w", what, e)
}

func fileOf(f *os.File) (dmsnap.File, int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return dmsnap.File{}, 0, err
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return dmsnap.File{}, 0, err
	}
	return dmsnap.File{Path: f.Name(), Dev: uint64(st.Dev), Ino: st.Ino}, fl & unix.O_ACCMODE, nil
}

// AttachLoop binds f to the lowest free loop number, held open by the
// returned Closer.
func (k *Fake) AttachLoop(_ context.Context, f *os.File, readOnly bool) (dmsnap.Loop, io.Closer, error) {
	id, acc, err := fileOf(f)
	if err != nil {
		return dmsnap.Loop{}, nil, fmt.Errorf("fake attach loop: %w", err)
	}
	if !readOnly && acc != unix.O_RDWR {
		return dmsnap.Loop{}, nil, errno("fake attach loop: read-write loop on a file not open for writing", unix.EBADF, nil)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.attachLocked(id, readOnly, !k.NoAutoclear)
	l.opens++
	var once sync.Once
	return k.loopInfo(l), closerFunc(func() error {
		once.Do(func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			l.opens--
			k.maybeClear(l)
		})
		return nil
	}), nil
}

type closerFunc func() error

func (c closerFunc) Close() error { return c() }

func (k *Fake) attachLocked(id dmsnap.File, ro, autoclear bool) *fakeLoop {
	n := 0
	for k.loops[n] != nil {
		n++
	}
	l := &fakeLoop{n: n, file: id, ro: ro, autoclear: autoclear, holders: map[string]bool{}}
	k.loops[n] = l
	return l
}

// maybeClear detaches l at its last close if autoclear is set.
func (k *Fake) maybeClear(l *fakeLoop) {
	if l.autoclear && l.opens == 0 && k.loops[l.n] == l {
		delete(k.loops, l.n)
	}
}

func (k *Fake) loopInfo(l *fakeLoop) dmsnap.Loop {
	out := dmsnap.Loop{
		Path: "/dev/loop" + strconv.Itoa(l.n), Major: LoopMajor, Minor: uint32(l.n),
		Backing: l.file.Path, BackingDev: l.file.Dev, BackingIno: l.file.Ino,
		ReadOnly: l.ro, Autoclear: l.autoclear,
	}
	for h := range l.holders {
		out.Holders = append(out.Holders, h)
	}
	slices.Sort(out.Holders)
	return out
}

func loopNum(dev string) (int, bool) {
	s, ok := strings.CutPrefix(dev, "/dev/loop")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// DetachLoop detaches dev if bound to want; lazily if it is held.
func (k *Fake) DetachLoop(_ context.Context, dev string, want dmsnap.File) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.detachLocked(dev, &want)
}

func (k *Fake) detachLocked(dev string, want *dmsnap.File) error {
	n, ok := loopNum(dev)
	l := k.loops[n]
	if !ok || l == nil {
		return errno("fake detach "+dev, unix.ENXIO, dmsnap.ErrNotFound)
	}
	if want != nil && !want.Matches(k.loopInfo(l)) {
		return fmt.Errorf("fake detach %s: bound to %s, not %s: %w", dev, l.file.Path, want.Path, dmsnap.ErrNotFound)
	}
	if l.opens > 0 {
		l.autoclear = true
		return nil
	}
	delete(k.loops, n)
	return nil
}

// Loops lists bound loops by number.
func (k *Fake) Loops(context.Context) ([]dmsnap.Loop, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []dmsnap.Loop
	for _, n := range k.loopNums() {
		l := k.loopInfo(k.loops[n])
		if k.NoLoopIdentity {
			l.BackingDev, l.BackingIno = 0, 0
		}
		out = append(out, l)
	}
	return out, nil
}

func (k *Fake) loopNums() []int {
	var ns []int
	for n := range k.loops {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

var devRefRE = regexp.MustCompile(`^(?:/dev/loop([0-9]+)|7:([0-9]+))$`)

// CreateDM makes a dm device whose table holds open every loop it names
// (as /dev/loopN or 7:N). A snapshot's COW loop must be read-write.
func (k *Fake) CreateDM(_ context.Context, name, uuid string, table []dmsnap.Target) (dmsnap.DMDevice, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.createLocked(name, uuid, table)
}

func (k *Fake) createLocked(name, uuid string, table []dmsnap.Target) (dmsnap.DMDevice, error) {
	if name == "" || strings.Contains(name, "/") {
		return dmsnap.DMDevice{}, errno("fake create dm "+name, unix.EINVAL, nil)
	}
	for _, d := range k.dms {
		if d.name == name || (uuid != "" && d.uuid == uuid) {
			return dmsnap.DMDevice{}, errno("fake create dm "+name, unix.EBUSY, dmsnap.ErrExists)
		}
	}
	if len(table) == 0 {
		return dmsnap.DMDevice{}, errno("fake create dm "+name+": empty table", unix.EINVAL, nil)
	}
	var used []int
	for _, t := range table {
		if err := t.Validate(); err != nil {
			return dmsnap.DMDevice{}, fmt.Errorf("fake create dm %s: %w", name, err)
		}
		for i, w := range strings.Fields(t.Params) {
			m := devRefRE.FindStringSubmatch(w)
			if m == nil {
				continue
			}
			n, _ := strconv.Atoi(m[1] + m[2])
			l := k.loops[n]
			if l == nil {
				return dmsnap.DMDevice{}, errno(fmt.Sprintf("fake create dm %s: cannot get device %s", name, w), unix.ENXIO, nil)
			}
			if t.Type == "snapshot" && i == 1 && l.ro {
				return dmsnap.DMDevice{}, errno(fmt.Sprintf("fake create dm %s: cow device %s is read-only", name, w), unix.EACCES, nil)
			}
			used = append(used, n)
		}
	}
	// Like the kernel's idr: the lowest free minor.
	taken := map[int]bool{}
	for _, x := range k.dms {
		taken[x.minor] = true
	}
	minor := 0
	for taken[minor] {
		minor++
	}
	d := &fakeDM{name: name, uuid: uuid, minor: minor, table: slices.Clone(table), loops: used}
	for _, n := range used {
		k.loops[n].opens++
		k.loops[n].holders[k.dmNode(d)] = true
	}
	k.dms[name] = d
	return k.dmInfo(d), nil
}

func (k *Fake) dmNode(d *fakeDM) string { return "dm-" + strconv.Itoa(d.minor) }

func (k *Fake) dmInfo(d *fakeDM) dmsnap.DMDevice {
	return dmsnap.DMDevice{Name: d.name, UUID: d.uuid, Major: DMMajor, Minor: uint32(d.minor), OpenCount: d.opens, Path: "/dev/" + k.dmNode(d)}
}

// RemoveDM removes the device with uuid unless it is open (or SetBusy
// said so), releasing its loops.
func (k *Fake) RemoveDM(_ context.Context, uuid string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.removeLocked(uuid)
}

func (k *Fake) removeLocked(uuid string) error {
	var d *fakeDM
	for _, x := range k.dms {
		if uuid != "" && x.uuid == uuid {
			d = x
		}
	}
	if d == nil {
		return errno("fake remove dm "+uuid, unix.ENXIO, dmsnap.ErrNotFound)
	}
	if k.busy[d.name] > 0 {
		k.busy[d.name]--
		return errno("fake remove dm "+d.name, unix.EBUSY, dmsnap.ErrBusy)
	}
	if d.opens > 0 {
		return errno("fake remove dm "+d.name, unix.EBUSY, dmsnap.ErrBusy)
	}
	delete(k.dms, d.name)
	for _, n := range d.loops {
		if l := k.loops[n]; l != nil {
			l.opens--
			delete(l.holders, k.dmNode(d))
			k.maybeClear(l)
		}
	}
	return nil
}

// DMDevices lists devices whose name starts with prefix, by name.
func (k *Fake) DMDevices(_ context.Context, prefix string) ([]dmsnap.DMDevice, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []dmsnap.DMDevice
	for _, name := range k.dmNames() {
		if strings.HasPrefix(name, prefix) {
			out = append(out, k.dmInfo(k.dms[name]))
		}
	}
	return out, nil
}

func (k *Fake) dmNames() []string {
	var names []string
	for n := range k.dms {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Open simulates a process opening the dm device name (a running VM):
// removing it is EBUSY until the returned func is called.
func (k *Fake) Open(name string) (release func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.dms[name]
	if d == nil {
		return func() {}
	}
	d.opens++
	var once sync.Once
	return func() {
		once.Do(func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			d.opens--
		})
	}
}

// SetBusy makes the next n removals of name fail with EBUSY.
func (k *Fake) SetBusy(name string, n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.busy[name] = n
}

// ErrUnsupported is the fake runner's answer to an argv it does not know.
var ErrUnsupported = errors.New("fake: unsupported command")

// String renders the state, one device a line, loops by number then dm
// devices by name; empty when nothing exists:
//
//	loop0 ro autoclear opens=1 /root/base.img
//	dm-0 banger-vm1 uuid=banger-dmsnap-vm1-0123456789abcdef open=0 table=[0 128 snapshot 7:0 7:1 P 8]
func (k *Fake) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for _, n := range k.loopNums() {
		l := k.loops[n]
		mode := "rw"
		if l.ro {
			mode = "ro"
		}
		ac := ""
		if l.autoclear {
			ac = " autoclear"
		}
		fmt.Fprintf(&b, "loop%d %s%s opens=%d %s\n", n, mode, ac, l.opens, l.file.Path)
	}
	for _, name := range k.dmNames() {
		d := k.dms[name]
		var lines []string
		for _, t := range d.table {
			lines = append(lines, t.String())
		}
		fmt.Fprintf(&b, "%s %s uuid=%s open=%d table=[%s]\n", k.dmNode(d), d.name, d.uuid, d.opens, strings.Join(lines, "; "))
	}
	return b.String()
}
