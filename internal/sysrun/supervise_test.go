package sysrun

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := backoff{min: time.Second, max: 30 * time.Second}
	for _, tc := range []struct {
		streak int
		want   time.Duration
	}{
		{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {5, 16 * time.Second},
		{6, 30 * time.Second}, {7, 30 * time.Second}, {1000, 30 * time.Second},
	} {
		if got := b.delay(tc.streak); got != tc.want {
			t.Errorf("delay(%d) = %s, want %s", tc.streak, got, tc.want)
		}
	}
}

// superviseFakes starts two fake children, "helper" then "bangerd" (which
// restarts only once the helper answers), and supervises them until the
// returned stop is called; stop returns supervise's result.
func superviseFakes(t *testing.T, b backoff, helperMode, daemonMode string) (s *supervisor, lw *lineWriter, pids [2]int, stop func() error) {
	t.Helper()
	lw = &lineWriter{w: &bytes.Buffer{}}
	s = &supervisor{log: lw, stopTimeout: 5 * time.Second, backoff: b}
	ready := func(context.Context) error { return nil }
	h, err := s.startChild(t.Context(), childSpec{name: "helper", cmd: func() *exec.Cmd { return child(t, helperMode) }, ready: ready}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.startChild(t.Context(), childSpec{name: "bangerd", cmd: func() *exec.Cmd { return child(t, daemonMode) }, ready: ready, after: h}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pids = [2]int{h.p.pid(), d.p.pid()}
	ctx, cancel := context.WithCancel(t.Context())
	res := make(chan error, 1)
	go func() { res <- s.supervise(ctx, []*slot{h, d}, 5*time.Second) }()
	var done bool
	var got error
	stop = func() error {
		if !done {
			cancel()
			got, done = <-res, true
		}
		return got
	}
	t.Cleanup(func() { _ = stop() })
	return s, lw, pids, stop
}

var restartedRE = regexp.MustCompile(`banger system: (\w+) restarted \(pid (\d+);`)

// restartedPid waits for name's n-th restart and returns its new pid.
func restartedPid(t *testing.T, lw *lineWriter, name string, n int) int {
	t.Helper()
	var pid int
	waitFor(t, func() bool {
		seen := 0
		for _, m := range restartedRE.FindAllStringSubmatch(lw.String(), -1) {
			if m[1] == name {
				if seen++; seen == n {
					pid, _ = strconv.Atoi(m[2])
					return true
				}
			}
		}
		return false
	})
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// A child killed with SIGKILL is started again, and the other one keeps
// running, the same process; a clean stop then stops both, bangerd first.
func TestSupervisorRestartsAKilledChildAndKeepsTheOther(t *testing.T) {
	_, lw, pids, stop := superviseFakes(t, backoff{min: 50 * time.Millisecond, max: time.Second, reset: time.Minute}, "term", "term")
	helperPid, daemonPid := pids[0], pids[1]
	waitFor(t, func() bool { return strings.Count(lw.String(), "world") == 2 })

	if err := syscall.Kill(daemonPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	newDaemon := restartedPid(t, lw, "bangerd", 1)
	if newDaemon == daemonPid || !alive(newDaemon) {
		t.Fatalf("bangerd restarted as pid %d (was %d), alive %v", newDaemon, daemonPid, alive(newDaemon))
	}
	if !alive(helperPid) {
		t.Fatal("the helper died when bangerd was killed")
	}
	if !strings.Contains(lw.String(), "bangerd (pid "+strconv.Itoa(daemonPid)+") exited unexpectedly (signal: killed)") {
		t.Errorf("log does not say why bangerd exited:\n%s", lw.String())
	}

	if err := syscall.Kill(helperPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	newHelper := restartedPid(t, lw, "helper", 1)
	if newHelper == helperPid || !alive(newHelper) {
		t.Fatalf("helper restarted as pid %d (was %d)", newHelper, helperPid)
	}
	if !alive(newDaemon) {
		t.Fatal("bangerd died when the helper was killed")
	}

	// Both restarted children say hello once they handle SIGTERM.
	waitFor(t, func() bool { return strings.Count(lw.String(), "world") == 4 })
	if err := stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	if alive(newHelper) || alive(newDaemon) {
		t.Errorf("after a clean stop: helper alive %v, bangerd alive %v", alive(newHelper), alive(newDaemon))
	}
	out := lw.String()
	tail := out[strings.Index(out, "stopping bangerd, then the helper"):]
	if d, h := strings.Index(tail, "bangerd: bye"), strings.Index(tail, "helper: bye"); d < 0 || h < 0 || d > h {
		t.Errorf("clean stop did not stop bangerd, then the helper (each saying bye):\n%s", out)
	}
}

var delayRE = regexp.MustCompile(`bangerd \(pid \d+\) exited unexpectedly \(exit status 7\) after \S+; restarting it in (\S+) \(crash (\d+) in a row`)

// A child that dies as soon as it starts is restarted with a growing
// delay, never in a hot loop, and the log counts the crashes.
func TestSupervisorBacksOffAChildThatKeepsCrashing(t *testing.T) {
	b := backoff{min: 40 * time.Millisecond, max: 320 * time.Millisecond, reset: time.Minute}
	_, lw, pids, stop := superviseFakes(t, b, "term", "die")
	start := time.Now()
	waitFor(t, func() bool { return len(delayRE.FindAllString(lw.String(), -1)) >= 6 })
	took := time.Since(start)
	if !alive(pids[0]) {
		t.Error("the helper died while bangerd kept crashing")
	}
	if err := stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	ms := delayRE.FindAllStringSubmatch(lw.String(), -1)[:6]
	want := []string{"40ms", "80ms", "160ms", "320ms", "320ms", "320ms"}
	for i, m := range ms {
		if m[1] != want[i] || m[2] != strconv.Itoa(i+1) {
			t.Errorf("crash %d: restart in %s (crash %s in a row), want %s (crash %d)", i+1, m[1], m[2], want[i], i+1)
		}
	}
	// Five restarts were waited for: 40+80+160+320+320 ms at least.
	if took < 920*time.Millisecond {
		t.Errorf("6 crashes within %s: restarts do not wait for the backoff", took)
	}
}
