package agent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"banger/internal/agentproto"
)

// statsFilesystems are the mounts the stats op reports: the root disk and
// the work disk.
var statsFilesystems = []string{"/", "/root"}

// parseMeminfo returns MemTotal and MemAvailable of /proc/meminfo in bytes.
// Kernels before 3.14 have no MemAvailable; it is then estimated as
// MemFree+Buffers+Cached, as free(1) did before it existed.
func parseMeminfo(r io.Reader) (total, avail uint64, err error) {
	kb := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch key {
		case "MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached":
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || (len(f) == 2 && f[1] != "kB") || len(f) > 2 {
			return 0, 0, fmt.Errorf("parse meminfo %s: unexpected value %q", key, rest)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse meminfo %s: %w", key, err)
		}
		kb[key] = n
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	t, ok := kb["MemTotal"]
	if !ok {
		return 0, 0, fmt.Errorf("parse meminfo: no MemTotal")
	}
	a, ok := kb["MemAvailable"]
	if !ok {
		a = kb["MemFree"] + kb["Buffers"] + kb["Cached"]
	}
	return t << 10, a << 10, nil
}

// parseLoadavg returns the three load averages of /proc/loadavg
// ("0.08 0.03 0.01 1/87 412").
func parseLoadavg(s string) (l1, l5, l15 float64, err error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("parse loadavg %q: too few fields", s)
	}
	var out [3]float64
	for i := range out {
		if out[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return 0, 0, 0, fmt.Errorf("parse loadavg %q: %w", s, err)
		}
	}
	return out[0], out[1], out[2], nil
}

// parseUptime returns the first field of /proc/uptime ("353.17 1310.95"):
// seconds since boot, suspend included.
func parseUptime(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("parse uptime %q: empty", s)
	}
	u, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse uptime %q: %w", s, err)
	}
	return u, nil
}

// countProcs counts the process directories among the names of /proc.
// loadavg's "running/total" would count threads, not processes.
func countProcs(names []string) int {
	n := 0
	for _, name := range names {
		if name != "" && strings.Trim(name, "0123456789") == "" {
			n++
		}
	}
	return n
}

// fsUsage turns statfs counts (in blocks of unit bytes) into sizes the way
// df does: used is every block not free, including those reserved for root,
// so used+avail falls short of size by the reserve.
func fsUsage(path string, blocks, bfree, bavail, unit uint64) agentproto.FSStats {
	used := uint64(0)
	if blocks > bfree {
		used = blocks - bfree
	}
	return agentproto.FSStats{Path: path, Size: blocks * unit, Used: used * unit, Avail: bavail * unit}
}

// statFS reads the usage of the filesystem holding path.
func statFS(path string) agentproto.FSStats {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return agentproto.FSStats{Path: path, Error: fmt.Sprintf("statfs %s: %v", path, err)}
	}
	// f_frsize is the unit of the block counts; f_bsize only the preferred
	// I/O size (the two agree on ext4, not everywhere).
	unit := st.Bsize
	if st.Frsize > 0 {
		unit = st.Frsize
	}
	if unit <= 0 {
		return agentproto.FSStats{Path: path, Error: fmt.Sprintf("statfs %s: block size %d", path, unit)}
	}
	return fsUsage(path, st.Blocks, st.Bfree, st.Bavail, uint64(unit))
}

// readStats gathers the stats reply from the proc filesystem at root and
// statfs of the given mounts.
func readStats(root string, mounts []string) (*agentproto.Stats, error) {
	out := &agentproto.Stats{}
	f, err := os.Open(filepath.Join(root, "meminfo"))
	if err != nil {
		return nil, fmt.Errorf("read meminfo: %w", err)
	}
	out.MemTotal, out.MemAvailable, err = parseMeminfo(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, "loadavg"))
	if err != nil {
		return nil, fmt.Errorf("read loadavg: %w", err)
	}
	if out.Load1, out.Load5, out.Load15, err = parseLoadavg(string(b)); err != nil {
		return nil, err
	}
	if b, err = os.ReadFile(filepath.Join(root, "uptime")); err != nil {
		return nil, fmt.Errorf("read uptime: %w", err)
	}
	if out.Uptime, err = parseUptime(string(b)); err != nil {
		return nil, err
	}
	d, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out.Procs = countProcs(names)
	for _, m := range mounts {
		out.Filesystems = append(out.Filesystems, statFS(m))
	}
	return out, nil
}

func stats(w io.Writer) {
	st, err := readStats(procRoot, statsFilesystems)
	if err != nil {
		reply(w, err)
		return
	}
	_ = agentproto.WriteJSONLine(w, agentproto.Reply{OK: true, Stats: st})
}
