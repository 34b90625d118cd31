package sysrun

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// Restart backoff: a crashed child is started again after restartFirst,
// doubling for each crash in a row up to restartLongest; a child that stayed
// up for restartCalm before it crashed starts a new streak at restartFirst.
const (
	restartFirst   = time.Second
	restartLongest = 30 * time.Second
	restartCalm    = time.Minute
)

// backoff is the restart policy of the supervisor.
type backoff struct {
	min, max, reset time.Duration
}

var defaultBackoff = backoff{min: restartFirst, max: restartLongest, reset: restartCalm}

// delay is the wait before the restart that follows crash number streak
// (1 for the first crash in a row).
func (b backoff) delay(streak int) time.Duration {
	d := b.min
	for i := 1; i < streak && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// childSpec is how to (re)start one child and tell that it answers.
type childSpec struct {
	name  string
	cmd   func() *exec.Cmd // a fresh command for each start
	ready func(context.Context) error
	// after names a child that must answer before this one is
	// (re)started: bangerd probes the helper once, as it starts.
	after *slot
}

// slot is one supervised child across its restarts.
type slot struct {
	childSpec
	idx      int // its place in supervisor.procs (the stop order)
	p        *proc
	started  time.Time
	up       bool // answered since it was last started
	streak   int  // crashes in a row
	restarts int
	timer    *time.Timer
	waiting  bool // due, but waiting for its after child to answer
}

// exit is a child's exit, reported by its watcher.
type exit struct {
	sl *slot
	p  *proc
}

// startChild starts spec, waits until it answers and returns its slot;
// any failure here is final (a bad install, not a crash).
func (s *supervisor) startChild(ctx context.Context, spec childSpec, readyTimeout time.Duration) (*slot, error) {
	p, err := s.start(spec.name, spec.cmd())
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx, p, readyTimeout, spec.ready); err != nil {
		return nil, err
	}
	return &slot{childSpec: spec, idx: len(s.procs) - 1, p: p, started: time.Now(), up: true}, nil
}

// supervise keeps the children of slots running until ctx is done, then
// stops them in order. A child that exits is logged and started again
// after the backoff; the others keep running.
func (s *supervisor) supervise(ctx context.Context, slots []*slot, readyTimeout time.Duration) error {
	exits := make(chan exit, len(slots))
	due := make(chan *slot, len(slots)) // at most one pending timer per slot
	quit := make(chan struct{})
	defer close(quit)
	watch := func(sl *slot, p *proc) {
		go func() {
			select {
			case <-p.done:
			case <-quit:
				return
			}
			select {
			case exits <- exit{sl, p}:
			case <-quit:
			}
		}()
	}
	for _, sl := range slots {
		watch(sl, sl.p)
	}
	defer func() {
		for _, sl := range slots {
			if sl.timer != nil {
				sl.timer.Stop()
			}
		}
	}()
	// crashed schedules sl's restart after the backoff.
	crashed := func(sl *slot, why string, ran time.Duration) {
		sl.up = false
		if ran >= s.backoff.reset {
			sl.streak = 0
		}
		sl.streak++
		d := s.backoff.delay(sl.streak)
		s.logf("%s %s after %s; restarting it in %s (crash %d in a row, %d restarts so far; VMs keep running)",
			sl.name, why, ran.Round(time.Millisecond), d, sl.streak, sl.restarts)
		sl.timer = time.AfterFunc(d, func() { due <- sl })
	}
	restart := func(sl *slot) {
		if err := s.restart(ctx, sl, readyTimeout, watch); err != nil {
			crashed(sl, "did not start: "+err.Error(), 0)
		}
	}
	for {
		select {
		case <-ctx.Done():
			s.logf("stopping bangerd, then the helper (VMs keep running)")
			return s.stopAll()
		case ev := <-exits:
			if ev.p != ev.sl.p {
				continue // an earlier run of this child
			}
			crashed(ev.sl, fmt.Sprintf("(pid %d) exited unexpectedly (%s)", ev.p.pid(), exitDesc(ev.p.err)), time.Since(ev.sl.started))
		case sl := <-due:
			sl.timer = nil
			if sl.after != nil && !sl.after.up {
				s.logf("%s waits for %s to answer before it restarts", sl.name, sl.after.name)
				sl.waiting = true
				continue
			}
			restart(sl)
			if !sl.up {
				continue
			}
			for _, o := range slots {
				if o.waiting && o.after == sl {
					o.waiting = false
					restart(o)
				}
			}
		}
	}
}

// restart starts sl's child again in its place in the stop order; the
// error is for a child that could not be started at all. A child that
// does not answer in time is stopped; its exit, like that of one that
// dies as it starts, arrives through watch and counts as a crash.
func (s *supervisor) restart(ctx context.Context, sl *slot, readyTimeout time.Duration, watch func(*slot, *proc)) error {
	sl.restarts++
	p, err := s.startAt(sl.idx, sl.name, sl.cmd())
	if err != nil {
		return err
	}
	sl.p, sl.started = p, time.Now()
	watch(sl, p)
	if err := s.waitReady(ctx, p, readyTimeout, sl.ready); err != nil {
		s.logf("restart %s (restart %d): %v", sl.name, sl.restarts, err)
		if !p.exited() && ctx.Err() == nil {
			_ = s.stop(p)
		}
		return nil
	}
	sl.up = true
	s.logf("%s restarted (pid %d; restart %d, after %d crashes in a row)", sl.name, p.pid(), sl.restarts, sl.streak)
	return nil
}
