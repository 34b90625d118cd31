package e2e

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// dmBenchPrefix starts the result lines of internal/dmsnap's
// TestCreateTimingRoot; TestGuestDMBench prints them again, unindented,
// for make bench (test/bench) to read.
const dmBenchPrefix = "dmsnap-bench: "

// TestGuestDMBench times per-VM root disks with device-mapper snapshots,
// which a host kernel without device-mapper cannot make: it runs
// internal/dmsnap's TestCreateTimingRoot as root in a guest
// (Manager.Create and Remove of a snapshot of a 1 GiB and a 16 GiB base,
// and a sparse copy of each as the baseline) and prints its result lines
// on stdout. `make bench` runs it;
// otherwise it is skipped unless BANGER_E2E_DMBENCH=1.
// BANGER_E2E_DMBENCH_RUNS sets the runs per measurement (default 7),
// BANGER_E2E_DMBENCH_COPY_RUNS those of the copies (default the same) and
// BANGER_E2E_DMBENCH_DATA_MIB the data in each image (default 64).
func TestGuestDMBench(t *testing.T) {
	if os.Getenv("BANGER_E2E_DMBENCH") != "1" {
		t.Skip("dm timing: set BANGER_E2E_DMBENCH=1 to run (make bench does)")
	}
	defer group(t)()
	env := []string{"BANGER_TEST_ROOT=1", "BANGER_TEST_DMSNAP_BENCH=1"}
	for _, v := range []struct {
		from, to string
		min      int
	}{
		{"BANGER_E2E_DMBENCH_RUNS", "BANGER_TEST_DMSNAP_BENCH_RUNS", 5},
		{"BANGER_E2E_DMBENCH_COPY_RUNS", "BANGER_TEST_DMSNAP_BENCH_COPY_RUNS", 5},
		{"BANGER_E2E_DMBENCH_DATA_MIB", "BANGER_TEST_DMSNAP_BENCH_DATA_MIB", 4},
	} {
		if s := os.Getenv(v.from); s != "" {
			if n, err := strconv.Atoi(s); err != nil || n < v.min {
				t.Fatalf("%s=%q: want an integer of at least %d", v.from, s, v.min)
			}
			env = append(env, v.to+"="+s)
		}
	}
	// make bench interrupts this run on Ctrl-C: stop the VM and the
	// daemon (TestMain's teardown) rather than leave them running.
	defer onInterrupt(func() { h.teardown() })()

	out := guestGoTest(t, "internal/dmsnap", env, "-test.run", "^TestCreateTimingRoot$", "-test.timeout", "10m")
	var lines []string
	creates := 0
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, "\r")
		if !strings.HasPrefix(l, dmBenchPrefix) {
			continue
		}
		lines = append(lines, l)
		if strings.Contains(l, " backend=dm op=create ") {
			creates++
		}
	}
	if creates != 2 {
		t.Fatalf("the guest printed %d dm create results, want 2 (1 GiB and 16 GiB); is TestCreateTimingRoot skipping?", creates)
	}
	for _, l := range lines {
		fmt.Println(l)
	}
}

// onInterrupt runs f and exits on SIGINT or SIGTERM until the returned
// stop is called.
func onInterrupt(f func()) (stop func()) {
	sig := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sig:
			fmt.Fprintf(os.Stderr, "e2e: %v: stopping the VM and the daemon\n", s)
			f()
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}
