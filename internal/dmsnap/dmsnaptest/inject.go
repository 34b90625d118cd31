package dmsnaptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"banger/internal/dmsnap"

	"golang.org/x/sys/unix"
)

// Op names a Backend method.
type Op string

// The Backend methods an Injector sees.
const (
	OpAttachLoop Op = "attach-loop"
	OpDetachLoop Op = "detach-loop"
	OpLoops      Op = "loops"
	OpCreateDM   Op = "create-dm"
	OpRemoveDM   Op = "remove-dm"
	OpDMDevices  Op = "dm-devices"
)

// Call is one Backend call as the Injector saw it.
type Call struct {
	Op Op
	// N counts calls of this Op, from 1.
	N int
	// ReadOnly is AttachLoop's flag (a base loop; a COW loop is not).
	ReadOnly bool
	// Arg is the file, device, name or uuid the call is about.
	Arg string
}

// ErrInjected marks the failures an Injector makes.
var ErrInjected = errors.New("injected failure")

// Injector wraps a Backend and, before each call, asks its rule whether
// the call fails instead of reaching the backend (a nil rule: never). It
// works the same over the Fake and a real backend.
type Injector struct {
	Backend dmsnap.Backend

	fail func(Call) error

	mu     sync.Mutex
	counts map[Op]int
	calls  []Call
}

// Inject wraps b.
func Inject(b dmsnap.Backend, fail func(Call) error) *Injector {
	return &Injector{Backend: b, fail: fail, counts: map[Op]int{}}
}

// SetFail replaces the failure rule and resets the call counts.
func (i *Injector) SetFail(fail func(Call) error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.fail = fail
	i.counts = map[Op]int{}
}

// Calls returns the calls seen so far.
func (i *Injector) Calls() []Call {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]Call(nil), i.calls...)
}

// Count returns how many calls of op were seen since the last SetFail.
func (i *Injector) Count(op Op) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.counts[op]
}

func (i *Injector) check(c Call) error {
	i.mu.Lock()
	i.counts[c.Op]++
	c.N = i.counts[c.Op]
	i.calls = append(i.calls, c)
	fail := i.fail
	i.mu.Unlock()
	if fail == nil {
		return nil
	}
	return fail(c)
}

// FailOn fails the nth call of op (n 0: every call) with ErrInjected.
func FailOn(op Op, n int) func(Call) error {
	return func(c Call) error {
		if c.Op == op && (n == 0 || c.N == n) {
			return fmt.Errorf("%s #%d %s: %w", c.Op, c.N, c.Arg, ErrInjected)
		}
		return nil
	}
}

// FailAttach fails attaching the base loop (readOnly) or the COW loop.
func FailAttach(readOnly bool) func(Call) error {
	return func(c Call) error {
		if c.Op == OpAttachLoop && c.ReadOnly == readOnly {
			return fmt.Errorf("%s %s: %w", c.Op, c.Arg, ErrInjected)
		}
		return nil
	}
}

// BusyRemoves answers the first n RemoveDM calls with EBUSY (0: all).
func BusyRemoves(n int) func(Call) error {
	return func(c Call) error {
		if c.Op == OpRemoveDM && (n == 0 || c.N <= n) {
			return fmt.Errorf("remove %s: %w: %w (%w)", c.Arg, dmsnap.ErrBusy, unix.EBUSY, ErrInjected)
		}
		return nil
	}
}

// AttachLoop implements dmsnap.Backend.
func (i *Injector) AttachLoop(ctx context.Context, f *os.File, readOnly bool) (dmsnap.Loop, io.Closer, error) {
	if err := i.check(Call{Op: OpAttachLoop, ReadOnly: readOnly, Arg: f.Name()}); err != nil {
		return dmsnap.Loop{}, nil, err
	}
	return i.Backend.AttachLoop(ctx, f, readOnly)
}

// DetachLoop implements dmsnap.Backend.
func (i *Injector) DetachLoop(ctx context.Context, dev string, want dmsnap.File) error {
	if err := i.check(Call{Op: OpDetachLoop, Arg: dev}); err != nil {
		return err
	}
	return i.Backend.DetachLoop(ctx, dev, want)
}

// Loops implements dmsnap.Backend.
func (i *Injector) Loops(ctx context.Context) ([]dmsnap.Loop, error) {
	if err := i.check(Call{Op: OpLoops}); err != nil {
		return nil, err
	}
	return i.Backend.Loops(ctx)
}

// CreateDM implements dmsnap.Backend.
func (i *Injector) CreateDM(ctx context.Context, name, uuid string, table []dmsnap.Target) (dmsnap.DMDevice, error) {
	if err := i.check(Call{Op: OpCreateDM, Arg: name}); err != nil {
		return dmsnap.DMDevice{}, err
	}
	return i.Backend.CreateDM(ctx, name, uuid, table)
}

// RemoveDM implements dmsnap.Backend.
func (i *Injector) RemoveDM(ctx context.Context, uuid string) error {
	if err := i.check(Call{Op: OpRemoveDM, Arg: uuid}); err != nil {
		return err
	}
	return i.Backend.RemoveDM(ctx, uuid)
}

// DMDevices implements dmsnap.Backend.
func (i *Injector) DMDevices(ctx context.Context, prefix string) ([]dmsnap.DMDevice, error) {
	if err := i.check(Call{Op: OpDMDevices, Arg: prefix}); err != nil {
		return nil, err
	}
	return i.Backend.DMDevices(ctx, prefix)
}
