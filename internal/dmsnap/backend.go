package dmsnap

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
)

// Errors a Backend wraps so Manager can tell the cases apart; test with
// errors.Is.
var (
	// ErrNotFound means the loop or dm device does not exist (or, for a
	// loop, is no longer bound to the expected file). Teardown treats it
	// as done.
	ErrNotFound = errors.New("not found")
	// ErrBusy means the device is open (EBUSY); removal may succeed later.
	ErrBusy = errors.New("device busy")
	// ErrExists means a dm device with that name or uuid already exists.
	ErrExists = errors.New("already exists")
)

// File identifies a backing file: its path and, when known, the device
// and inode it had when it was opened. A file matches a loop's backing
// file by device and inode when both sides know them, by path otherwise.
type File struct {
	Path string `json:"path"`
	Dev  uint64 `json:"dev,omitempty"`
	Ino  uint64 `json:"ino,omitempty"`
}

// Matches reports whether l is bound to f.
func (f File) Matches(l Loop) bool {
	if f.Ino != 0 && l.BackingIno != 0 {
		return f.Dev == l.BackingDev && f.Ino == l.BackingIno
	}
	return f.Path != "" && f.Path == l.Backing
}

// Loop is a bound loop device.
type Loop struct {
	Path  string // /dev/loopN
	Major uint32
	Minor uint32
	// Backing is the backing file's path as the kernel reports it, without
	// the " (deleted)" suffix, which sets Deleted instead.
	Backing string
	Deleted bool
	// BackingDev and BackingIno identify the backing file when the backend
	// can tell them without opening the loop device (0 otherwise).
	BackingDev uint64
	BackingIno uint64
	ReadOnly   bool
	Autoclear  bool
	// Holders are the block devices using the loop (dm-3), when known.
	Holders []string
}

// DevNum is the loop's "major:minor", as dm tables take it.
func (l Loop) DevNum() string { return DevNum(l.Major, l.Minor) }

// DMDevice is a device-mapper device.
type DMDevice struct {
	Name      string
	UUID      string
	Major     uint32
	Minor     uint32
	OpenCount int
	// Path is a device node for it (/dev/dm-N or /dev/mapper/NAME), empty
	// when the backend found none.
	Path string
}

// Backend is everything Manager needs from the kernel. Each method is all
// or nothing: on error it has left nothing behind (it undoes its own
// partial work), so Manager's journal needs one record per method call.
// Implementations must be safe for concurrent use.
type Backend interface {
	// AttachLoop binds f to a free loop device, read-only when readOnly
	// (f must be open read-write otherwise), with autoclear when the
	// backend supports it. The returned Closer keeps the device open:
	// with autoclear, closing it while nothing else holds the device
	// detaches it, so Manager closes it only once the dm table holds the
	// loop, or when undoing; if the process dies first, the kernel closes
	// it and the loop goes away by itself.
	AttachLoop(ctx context.Context, f *os.File, readOnly bool) (Loop, io.Closer, error)
	// DetachLoop detaches dev if it is still bound to want. It returns
	// ErrNotFound when dev is unbound or bound to another file (which is
	// then left alone). Detaching a loop that something still holds is
	// lazy: the kernel detaches it at its last close.
	DetachLoop(ctx context.Context, dev string, want File) error
	// Loops lists the bound loop devices.
	Loops(ctx context.Context) ([]Loop, error)
	// CreateDM creates the dm device name with uuid, loads table and
	// resumes it. ErrExists when the name or uuid is taken.
	CreateDM(ctx context.Context, name, uuid string, table []Target) (DMDevice, error)
	// RemoveDM removes the dm device with this uuid (never by name: the
	// uuid is the proof it is ours). ErrNotFound when there is none,
	// ErrBusy when it is open.
	RemoveDM(ctx context.Context, uuid string) error
	// DMDevices lists the dm devices whose name starts with prefix.
	DMDevices(ctx context.Context, prefix string) ([]DMDevice, error)
}

// trimDeleted splits the kernel's " (deleted)" suffix off a backing path.
func trimDeleted(p string) (string, bool) {
	if s, ok := strings.CutSuffix(p, " (deleted)"); ok {
		return s, true
	}
	return p, false
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
