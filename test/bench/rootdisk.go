package main

// Per-VM root disks: the time to make a VM's root disk from a 1 GiB and a
// 16 GiB image with each storage backend.
//
//   - copy (the baseline) and reflink: image.MakeRootDisk on this host. When
//     the bench directory's filesystem cannot clone extents (ext4), reflink
//     is timed on a temporary XFS filesystem (a sparse file made with
//     mkfs.xfs -m reflink=1, on an autoclear loop device, mounted in the
//     bench's private directory), which needs root; it is unmounted, the
//     loop detached and the file removed however the bench ends.
//   - dm: a device-mapper snapshot (dmsnap Manager.Create, then Remove) in
//     a guest, whose kernel has device-mapper (this host's may not), through
//     `go test ./test/e2e -run TestGuestDMBench` (see its doc); the guest
//     also times copy there, the baseline at the guest's speed.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/dmsnap"
	"banger/internal/execx"
	"banger/internal/image"
	"banger/test/benchdata"
)

// The images: sparse, with the same data at both sizes (diskDataMiB in
// 4 MiB runs spread evenly over the image), as an image grown to 16 GiB
// for room holds what it held at 1 GiB.
var diskSizesGiB = []int64{1, 16}

const (
	diskDataMiB = 256
	// Size of the temporary reflink filesystem's (sparse) file: room for
	// both images' data; the clones share it.
	reflinkFSSize = 4 << 30
	// The O(1) target: the 16 GiB time within 10% of the 1 GiB time.
	o1Tolerance = 0.10
)

// repoDir is the repository's root (the bench runs from it).
var repoDir = "."

// diskRow is one backend's root-disk times.
type diskRow struct {
	backend string
	where   string
	why     string // set when the backend could not be timed here
	runs    map[int64][]time.Duration
	target  bool // the O(1) target applies
}

// rootDiskBench times copy n times per image size, and reflink and dm
// fastRuns times.
func rootDiskBench(root string, n, fastRuns int, guestDM bool, accel string) error {
	part := time.Now()
	dir := filepath.Join(root, "disks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	reflOK, fs := image.ProbeReflink(dir)
	fmt.Printf("root disks: images of %s GiB, sparse, %d MiB of data each in %d MiB runs spread over the image; median of %d runs (copy) or %d (reflink, dm) after an untimed one\n",
		joinInts(diskSizesGiB, " and "), diskDataMiB, benchdata.Extent>>20, n, fastRuns)
	copyRow, err := timeRootDisks(image.StorageCopy, dir, "host, "+fs, n)
	if err != nil {
		return err
	}
	copyRow.backend += " (baseline)"
	rows := []diskRow{copyRow}

	switch {
	case reflOK:
		row, err := timeRootDisks(image.StorageReflink, dir, "host, "+fs, fastRuns)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	case os.Geteuid() != 0:
		why := fmt.Sprintf("%s cannot clone extents, and a temporary xfs filesystem to time it on needs root", fs)
		fmt.Printf("reflink: unavailable: %s\n", why)
		rows = append(rows, diskRow{backend: "reflink", why: why})
	default:
		mnt, kind, release, err := tempReflinkFS(root, fs)
		if err != nil {
			why := fmt.Sprintf("%s cannot clone extents, and making a temporary filesystem that can failed: %v", fs, err)
			fmt.Printf("reflink: unavailable: %s\n", why)
			rows = append(rows, diskRow{backend: "reflink", why: why})
			break
		}
		row, err := timeRootDisks(image.StorageReflink, mnt, "host, temporary "+kind+" on a loop device", fastRuns)
		release(true)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	if ok, why := image.ProbeOverlay(); ok {
		row, err := timeRootDisks(image.StorageOverlay, dir, "host, "+fs+" (QEMU only)", fastRuns)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	} else {
		rows = append(rows, diskRow{backend: "overlay", why: why})
	}
	fmt.Printf("(root disks on the host: took %.1fs)\n", time.Since(part).Seconds())

	if err := dmsnap.Probe(); err != nil {
		fmt.Printf("dm: not on this host (%v)\n", err)
	}
	if guestDM {
		part = time.Now()
		grows, err := guestDMBench(fastRuns, n, accel)
		if err != nil {
			return err
		}
		rows = append(rows, grows...)
		fmt.Printf("(dm in a guest, with the VM's boot and the test builds: took %.1fs)\n", time.Since(part).Seconds())
	} else {
		rows = append(rows, diskRow{backend: "dm", why: "skipped (-guest-dm=false)"})
	}
	printDiskTable(rows)
	return nil
}

// timeRootDisks writes the bench images in dir and times
// image.MakeRootDisk(st) from each, n times after an untimed run, the sizes
// interleaved (their order alternating) and dir synced between runs.
// Copies are removed after each run (they hold the data); clones are kept
// until the end, so that the filesystem's background work of freeing one
// (xfs's inode garbage collection) does not land in the next one's time.
func timeRootDisks(st image.Storage, dir, where string, n int) (diskRow, error) {
	row := diskRow{backend: string(st), where: where, runs: map[int64][]time.Duration{}, target: st != image.StorageCopy}
	imgs := map[int64]string{}
	for _, gib := range diskSizesGiB {
		imgs[gib] = filepath.Join(dir, fmt.Sprintf("img-%dg", gib))
		if err := benchdata.WriteImage(imgs[gib], gib<<30, diskDataMiB<<20); err != nil {
			return row, err
		}
		defer os.Remove(imgs[gib])
	}
	d, err := os.Open(dir)
	if err != nil {
		return row, err
	}
	defer d.Close()
	keep := st == image.StorageReflink
	for i := range n + 1 {
		for _, gib := range benchOrder(i) {
			dst := filepath.Join(dir, "root")
			if keep {
				dst = filepath.Join(dir, fmt.Sprintf("root-%dg-%d", gib, i))
				defer os.Remove(dst)
			}
			t0 := time.Now()
			var err error
			if st == image.StorageOverlay {
				err = image.MakeOverlay(context.Background(), imgs[gib], dst)
			} else {
				err = image.MakeRootDisk(st, imgs[gib], dst)
			}
			if err != nil {
				return row, err
			}
			took := time.Since(t0)
			if !keep {
				if err := os.Remove(dst); err != nil {
					return row, err
				}
			}
			// Each run starts with nothing of the last left to write back.
			if err := unix.Syncfs(int(d.Fd())); err != nil {
				return row, err
			}
			if i > 0 {
				row.runs[gib] = append(row.runs[gib], took)
			}
		}
	}
	for _, gib := range diskSizesGiB {
		fmt.Printf("root disk from a %2d GiB image, %-7s (%s): median %s  (runs %s)\n",
			gib, st, where, ms(median(row.runs[gib])), msList(row.runs[gib]))
	}
	return row, nil
}

// benchOrder is the order of the sizes in round i: alternated, so neither
// size always follows the other's teardown.
func benchOrder(i int) []int64 {
	if i%2 == 0 {
		return diskSizesGiB
	}
	return []int64{diskSizesGiB[1], diskSizesGiB[0]}
}

// tempReflinkFS makes a filesystem that clones extents: a sparse file under
// root formatted with mkfs.xfs -m reflink=1 (mkfs.btrfs when xfsprogs is
// missing), bound to a loop device with autoclear and mounted on a
// directory under root (0700). release(true) unmounts it (the loop then
// detaches itself), checks the loop is gone and removes the file; it also
// runs from the bench's cleanups however the bench ends.
func tempReflinkFS(root, hostFS string) (mnt, kind string, release func(run bool), err error) {
	var mkfs string
	var args []string
	if bin, err := execx.LookPath("mkfs.xfs"); err == nil {
		mkfs, kind, args = bin, "xfs", []string{"-q", "-m", "reflink=1"}
	} else if bin, err := execx.LookPath("mkfs.btrfs"); err == nil {
		mkfs, kind, args = bin, "btrfs", []string{"-q"}
	} else {
		return "", "", nil, errors.New("neither mkfs.xfs (xfsprogs; make deps installs it) nor mkfs.btrfs is installed")
	}
	img := filepath.Join(root, "reflink-fs.img")
	mnt = filepath.Join(root, "reflink-mnt")
	// The state below is the bench's and, on a signal, the cleanup's: mu
	// orders them, and once closed no step runs.
	var (
		mu      sync.Mutex
		closed  bool
		steps   []string
		loop    dmsnap.Loop
		loopID  dmsnap.File
		hold    io.Closer
		mounted bool
	)
	step := func(f func() error) error {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return errors.New("interrupted")
		}
		return f()
	}
	undo := func() {
		mu.Lock()
		defer mu.Unlock()
		closed = true
		if mounted {
			if err := unix.Unmount(mnt, 0); err == nil {
				steps = append(steps, "unmounted "+mnt)
			} else if err := unix.Unmount(mnt, unix.MNT_DETACH); err == nil {
				// Busy (the bench was interrupted mid-run): the kernel
				// lets go once its files close, at the latest when the
				// bench exits.
				steps = append(steps, "lazily unmounted "+mnt+" (busy)")
			} else {
				fmt.Fprintf(os.Stderr, "reflink: unmount %s: %v\n", mnt, err)
			}
			mounted = false
		}
		if hold != nil {
			hold.Close()
			hold = nil
		}
		if loop.Path != "" {
			if loopGone(loop, img) {
				steps = append(steps, loop.Path+" detached itself (autoclear)")
			} else if err := dmsnap.NewIoctlBackend().DetachLoop(context.Background(), loop.Path, loopID); err != nil && !errors.Is(err, dmsnap.ErrNotFound) {
				fmt.Fprintf(os.Stderr, "reflink: detach %s: %v\n", loop.Path, err)
			} else {
				steps = append(steps, "detached "+loop.Path)
			}
			loop.Path = ""
		}
		if err := os.Remove(img); err == nil {
			steps = append(steps, "removed "+img)
		}
		_ = os.Remove(mnt)
		if len(steps) > 0 {
			fmt.Printf("reflink: cleaned up: %s\n", strings.Join(steps, ", "))
		}
	}
	release = cl.add(undo)
	fail := func(err error) (string, string, func(bool), error) {
		release(true)
		return "", "", nil, err
	}

	err = step(func() error {
		f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		err = f.Truncate(reflinkFSSize)
		f.Close()
		if err != nil {
			return err
		}
		_, err = execx.Default.Run(context.Background(), mkfs, append(args, img)...)
		return err
	})
	if err != nil {
		return fail(err)
	}
	err = step(func() error {
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close() // the loop holds the file once bound
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return err
		}
		loopID = dmsnap.File{Path: img, Dev: uint64(st.Dev), Ino: st.Ino}
		loop, hold, err = dmsnap.NewIoctlBackend().AttachLoop(context.Background(), f, false)
		return err
	})
	if err != nil {
		return fail(err)
	}
	err = step(func() error {
		if err := os.Mkdir(mnt, 0o700); err != nil {
			return err
		}
		if err := unix.Mount(loop.Path, mnt, kind, unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", loop.Path, kind, mnt, err)
		}
		mounted = true
		// The mount holds the loop now: with autoclear, it detaches
		// itself at the unmount.
		hold.Close()
		hold = nil
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if ok, got := image.ProbeReflink(mnt); !ok {
		return fail(fmt.Errorf("the %s made on %s cannot clone extents either (%s)", kind, loop.Path, got))
	}
	fmt.Printf("reflink: %s cannot clone extents: made a temporary %s (%s %s on a sparse %d GiB file), attached it to %s (autoclear) and mounted it at %s\n",
		hostFS, kind, filepath.Base(mkfs), strings.Join(args, " "), reflinkFSSize>>30, loop.Path, mnt)
	return mnt, kind, release, nil
}

// loopGone waits up to 5 s for l to be unbound from img (autoclear runs at
// the last close, which may finish after the unmount returns).
func loopGone(l dmsnap.Loop, img string) bool {
	sys := filepath.Join("/sys/block", filepath.Base(l.Path), "loop", "backing_file")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(sys)
		if err != nil || strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)") != img {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// guestDMBench runs TestGuestDMBench (test/e2e), which boots a guest and
// times dm snapshots and copies there, and reads its result lines.
func guestDMBench(runs, copyRuns int, accel string) ([]diskRow, error) {
	gobin, err := execx.LookPath("go")
	if err != nil {
		return nil, err
	}
	args := []string{"test", "-count=1", "-timeout", "15m", "-v", "-run", "^TestGuestDMBench$", "./test/e2e/"}
	env := []string{"BANGER_TEST_VM=1", "BANGER_E2E_DMBENCH=1", "BANGER_E2E_DMBENCH_RUNS=" + strconv.Itoa(runs),
		"BANGER_E2E_DMBENCH_COPY_RUNS=" + strconv.Itoa(copyRuns), "BANGER_E2E_DMBENCH_DATA_MIB=" + strconv.Itoa(diskDataMiB)}
	fmt.Printf("dm: timing it in a guest: %s go %s\n", strings.Join(env, " "), strings.Join(args, " "))
	cmd := exec.Command(gobin, args...)
	cmd.Dir = repoDir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, so that on Ctrl-C the bench decides: it
	// interrupts the whole group (go test and the test binary, which then
	// stops its VM and daemon) and waits for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	release := cl.add(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	err = cmd.Wait()
	close(exited)
	release(false)
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail(out.String(), 60))
	}
	if _, rest, ok := strings.Cut(out.String(), "--- PASS: TestCreateTimingRoot ("); ok {
		if took, _, ok := strings.Cut(rest, ")"); ok {
			fmt.Printf("dm: the timing test itself ran %s in the guest\n", took)
		}
	}
	where := fmt.Sprintf("guest (%s), ext4", accel)
	rows := map[string]*diskRow{}
	var order []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "dmsnap-bench: ")
		if !ok {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		gib, err1 := strconv.ParseInt(kv["size_gib"], 10, 64)
		var runs []time.Duration
		for _, s := range strings.Split(kv["runs_ms"], ",") {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || err1 != nil {
				return nil, fmt.Errorf("unreadable guest result %q", line)
			}
			runs = append(runs, time.Duration(v*float64(time.Millisecond)))
		}
		name := kv["backend"]
		if kv["op"] != "create" {
			name += " " + kv["op"]
		}
		if kv["backend"] == "copy" {
			name += " (baseline)"
		}
		r := rows[name]
		if r == nil {
			w := where
			if kv["data_mib"] != strconv.Itoa(diskDataMiB) {
				w += ", " + kv["data_mib"] + " MiB of data"
			}
			r = &diskRow{backend: name, where: w, runs: map[int64][]time.Duration{},
				target: kv["backend"] == "dm" && kv["op"] == "create"}
			rows[name] = r
			order = append(order, name)
		}
		r.runs[gib] = runs
		fmt.Printf("root disk from a %2d GiB image, %-9s (%s): median %s  (runs %s)\n", gib, name, where, ms(median(runs)), msList(runs))
	}
	if rows["dm"] == nil || len(rows["dm"].runs) != len(diskSizesGiB) {
		return nil, fmt.Errorf("go %s printed no dm results for both sizes\n%s", strings.Join(args, " "), tail(out.String(), 60))
	}
	var res []diskRow
	for _, name := range order {
		res = append(res, *rows[name])
	}
	return res, nil
}

// printDiskTable prints the rows, the 16 GiB / 1 GiB ratio and, for dm
// and reflink, whether the 16 GiB time is within 10% of the 1 GiB time.
func printDiskTable(rows []diskRow) {
	fmt.Printf("\nper-VM root disk creation (median):\n")
	small, big := diskSizesGiB[0], diskSizesGiB[1]
	fmt.Printf("  %-18s %-40s %11s %11s %6s\n", "backend", "where", fmt.Sprintf("%d GiB", small), fmt.Sprintf("%d GiB", big), fmt.Sprintf("%d/%d", big, small))
	for _, r := range rows {
		if r.why != "" {
			fmt.Printf("  %-18s unavailable: %s\n", r.backend, r.why)
			continue
		}
		a, b := median(r.runs[small]), median(r.runs[big])
		ratio := b.Seconds() / a.Seconds()
		verdict := ""
		if r.target {
			verdict = "  O(1) target (16 GiB within 10% of 1 GiB): met"
			if math.Abs(ratio-1) > o1Tolerance {
				verdict = "  O(1) target (16 GiB within 10% of 1 GiB): NOT met"
			}
		}
		fmt.Printf("  %-18s %-40s %11s %11s %6.2f%s\n", r.backend, r.where, ms(a), ms(b), ratio, verdict)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func msList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", float64(d.Microseconds())/1000)
	}
	return strings.Join(parts, " ")
}

func joinInts(v []int64, sep string) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(parts, sep)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
