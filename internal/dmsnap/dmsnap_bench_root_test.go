package dmsnap_test

// TestCreateTimingRoot times what a VM's root disk costs with dm storage
// against the copy baseline, at two image sizes. `make bench` runs it as
// root inside a guest (TestGuestDMBench in test/e2e, through the
// guestGoTest harness) and reads the lines it prints; it runs only with
// BANGER_TEST_DMSNAP_BENCH=1, on top of what the other real-kernel tests
// need (root, BANGER_TEST_ROOT=1, loop and device-mapper).

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/dmsnap"
	"banger/internal/image"
	"banger/test/benchdata"

	"golang.org/x/sys/unix"
)

// benchLinePrefix starts every result line TestCreateTimingRoot prints
// on stdout, one per backend, operation and image size:
//
//	dmsnap-bench: backend=dm op=create size_gib=16 n=7 median_ms=21.503 data_mib=64 runs_ms=20.9,21.5,...
const benchLinePrefix = "dmsnap-bench: "

// Image sizes timed, in GiB.
var benchSizesGiB = []int64{1, 16}

// TestCreateTimingRoot times, for a sparse 1 GiB and 16 GiB base image
// holding the same data (BANGER_TEST_DMSNAP_BENCH_DATA_MIB, default 64, in
// 4 MiB runs spread evenly over the image): Manager.Create of a snapshot
// with IoctlBackend, its Remove, and image.MakeRootDisk with StorageCopy
// (a sparse copy, the baseline). Each is run BANGER_TEST_DMSNAP_BENCH_RUNS
// times (default 7, at least 5; the copies BANGER_TEST_DMSNAP_BENCH_COPY_RUNS
// times, default the same) after one untimed run, the two sizes
// interleaved (their order alternating) with a sync between runs, and
// reported as the median.
func TestCreateTimingRoot(t *testing.T) {
	if os.Getenv("BANGER_TEST_DMSNAP_BENCH") != "1" {
		t.Skip("timing: set BANGER_TEST_DMSNAP_BENCH=1 to run (make bench does, in a guest)")
	}
	requireRealKernel(t, true)
	runs := max(benchEnvInt(t, "BANGER_TEST_DMSNAP_BENCH_RUNS", 7), 5)
	copyRuns := max(benchEnvInt(t, "BANGER_TEST_DMSNAP_BENCH_COPY_RUNS", runs), 5)
	dataMiB := max(benchEnvInt(t, "BANGER_TEST_DMSNAP_BENCH_DATA_MIB", 64), benchdata.Extent>>20)
	ctx := context.Background()
	root, state := t.TempDir(), t.TempDir()
	m, err := dmsnap.Open(dmsnap.Config{Root: root, StateDir: state, Backend: dmsnap.NewIoctlBackend()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, e := range m.Entries() {
			_ = m.Remove(context.Background(), e.ID)
		}
		m.Close()
		requireNoResidue(t, root, "bench-")
	})

	t0 := time.Now()
	bases := map[int64]string{}
	for _, gib := range benchSizesGiB {
		bases[gib] = filepath.Join(root, fmt.Sprintf("base-%dg.img", gib))
		if err := benchdata.WriteImage(bases[gib], gib<<30, int64(dataMiB)<<20); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote the base images (%d MiB of data each) in %.1fs", dataMiB, time.Since(t0).Seconds())

	type key struct {
		backend, op string
		gib         int64
	}
	times := map[key][]time.Duration{}
	t0 = time.Now()
	// Round 0 is untimed: it warms the first loop devices, the dm
	// target and the caches.
	for i := range runs + 1 {
		for _, gib := range benchOrder(i) {
			id := fmt.Sprintf("bench-%dg-%d", gib, i)
			cow := filepath.Join(root, id+".cow")
			start := time.Now()
			e, err := m.Create(ctx, dmsnap.Spec{ID: id, Base: bases[gib], COW: cow})
			created := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				checkBenchDevice(t, e, gib<<30)
			}
			start = time.Now()
			if err := m.Remove(ctx, id); err != nil {
				t.Fatal(err)
			}
			removed := time.Since(start)
			if err := os.Remove(cow); err != nil {
				t.Fatal(err)
			}
			unix.Sync() // each run starts with nothing left to write back
			if i > 0 {
				times[key{"dm", "create", gib}] = append(times[key{"dm", "create", gib}], created)
				times[key{"dm", "remove", gib}] = append(times[key{"dm", "remove", gib}], removed)
			}
		}
	}
	t.Logf("dm: %d snapshots made and removed in %.1fs", 2*(runs+1), time.Since(t0).Seconds())
	t0 = time.Now()
	for i := range copyRuns + 1 {
		for _, gib := range benchOrder(i) {
			dst := filepath.Join(root, "copy.img")
			start := time.Now()
			if err := image.MakeRootDisk(image.StorageCopy, bases[gib], dst); err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			if err := os.Remove(dst); err != nil {
				t.Fatal(err)
			}
			unix.Sync()
			if i > 0 {
				times[key{"copy", "create", gib}] = append(times[key{"copy", "create", gib}], d)
			}
		}
	}
	t.Logf("copy: %d copies in %.1fs", 2*(copyRuns+1), time.Since(t0).Seconds())

	for _, k := range []key{{"dm", "create", 1}, {"dm", "create", 16}, {"dm", "remove", 1}, {"dm", "remove", 16}, {"copy", "create", 1}, {"copy", "create", 16}} {
		ds := times[k]
		ms := make([]string, len(ds))
		for i, d := range ds {
			ms[i] = strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64)
		}
		fmt.Printf("%sbackend=%s op=%s size_gib=%d n=%d median_ms=%.3f data_mib=%d runs_ms=%s\n", benchLinePrefix,
			k.backend, k.op, k.gib, len(ds), float64(benchMedian(ds).Microseconds())/1000, dataMiB, strings.Join(ms, ","))
	}
}

// benchOrder is the order of the sizes in round i: alternated, so neither
// size always follows the other's teardown.
func benchOrder(i int) []int64 {
	if i%2 == 0 {
		return benchSizesGiB
	}
	return []int64{benchSizesGiB[1], benchSizesGiB[0]}
}

func benchEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// checkBenchDevice checks the snapshot is a device of the base's size.
func checkBenchDevice(t *testing.T, e dmsnap.Entry, size int64) {
	t.Helper()
	f, err := os.Open(e.DM.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	if got != size {
		t.Fatalf("%s is %d bytes, want %d", e.DM.Path, got, size)
	}
}

func benchMedian(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
