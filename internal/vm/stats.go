package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agentclient"
	"banger/internal/agentproto"
	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/paths"
	"banger/internal/procstat"
	"banger/internal/store"
	"banger/internal/vmm"
)

// guestStatsTimeout bounds the guest part of a stats sample: a busy or
// stuck guest costs the answer its guest part, never the host part.
var guestStatsTimeout = 5 * time.Second

// Stats samples what a VM costs: its disks always, and while it runs its
// VMM process as the host sees it and the guest's own view through its
// agent. A guest that cannot answer (an agent that predates the stats op,
// a guest still booting) leaves the guest part out with the reason.
func (s *Service) Stats(ctx context.Context, ref string) (api.VMStats, error) {
	v, err := s.st.GetVM(ctx, ref)
	if err != nil {
		return api.VMStats{}, err
	}
	if v.State == api.StateCreating {
		return api.VMStats{}, errdefs.Conflict("vm %q is still being created", v.Name)
	}
	out := api.VMStats{Name: v.Name, State: v.State, VCPU: v.VCPU, MemoryMiB: v.MemoryMiB, SampledAt: time.Now().UTC()}
	if out.Disks, err = s.diskStats(v); err != nil {
		return api.VMStats{}, err
	}
	if !hasProcess(v.State) {
		return out, nil
	}
	in := s.instance(v.ID)
	if in == nil {
		// It may have stopped since the record was read.
		if v, err = s.st.GetVM(ctx, v.ID); err == nil && !hasProcess(v.State) {
			out.State = v.State
			return out, nil
		}
		return api.VMStats{}, errdefs.Unavailable("vm %q is %s but bangerd has no handle on it", out.Name, out.State)
	}
	host, err := hostStats(in.proc)
	if err != nil {
		return api.VMStats{}, fmt.Errorf("sample vm %q: %w", v.Name, err)
	}
	out.Host = &host
	if v.State != api.StateRunning {
		out.GuestError = fmt.Sprintf("vm is %s", v.State)
		return out, nil
	}
	out.Guest, out.GuestError = s.guestStats(ctx, v)
	return out, nil
}

// hasProcess reports whether a VM in state has a VMM process to sample.
func hasProcess(state string) bool {
	return state == api.StateRunning || state == api.StateStarting || state == api.StateStopping
}

// diskStats stats v's root and work disk files. A file that does not exist
// (yet) is left out rather than failing the sample.
func (s *Service) diskStats(v store.VM) ([]api.DiskStats, error) {
	kind, root := s.rootKind(v)
	out := []api.DiskStats{}
	for _, d := range []struct{ name, file string }{{"root", root}, {"work", paths.WorkDisk}} {
		p := filepath.Join(s.layout.VMDir(v.ID), d.file)
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stat %s disk of %s: %w", d.name, v.Name, err)
		}
		u := diskUsage(d.name, fi)
		if d.name == "root" && kind == api.RootDiskOverlay {
			// The disk the guest sees, not the overlay file's length.
			if size, err := image.OverlaySize(p); err == nil {
				u.SizeBytes = size
			}
		}
		out = append(out, u)
	}
	return out, nil
}

// diskUsage is a disk file's apparent size and what the host filesystem
// allocated for it: st_blocks counts 512-byte units whatever the
// filesystem's block size.
func diskUsage(name string, fi os.FileInfo) api.DiskStats {
	d := api.DiskStats{Name: name, File: fi.Name(), SizeBytes: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		d.AllocatedBytes = st.Blocks * 512
	}
	return d
}

// hostStats samples the VMM process: CPU time and RSS from /proc, and its
// age from the start time recorded when bangerd launched or adopted it.
func hostStats(p *vmm.Process) (api.HostStats, error) {
	pid := p.Handle.PID
	st, err := procstat.Read(pid)
	if err != nil {
		return api.HostStats{}, errdefs.Unavailable("vmm process %d is gone: %v", pid, err)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return api.HostStats{}, errdefs.Unavailable("vmm process %d is gone: %v", pid, err)
	}
	// Checked after the status read: the same start time now means both
	// reads were of our VMM, not of a process that reused its pid meanwhile.
	if again, err := procstat.Read(pid); err != nil || st.StartTime != p.Handle.PIDStart || again.StartTime != st.StartTime || !p.Alive() {
		return api.HostStats{}, errdefs.Unavailable("vmm process %d is gone", pid)
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return api.HostStats{}, err
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &now); err != nil {
		return api.HostStats{}, fmt.Errorf("read boot clock: %w", err)
	}
	return api.HostStats{
		PID:           pid,
		UptimeSeconds: max(0, time.Duration(now.Nano()).Seconds()-float64(st.StartTime)/procstat.ClockTicks),
		CPUSeconds:    st.CPUSeconds(),
		RSSBytes:      rss,
	}, nil
}

// parseStatusRSS returns VmRSS of /proc/PID/status in bytes. A process
// that has exited (a zombie) has none.
func parseStatusRSS(data []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse process status: VmRSS %q", rest)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64>>10 {
			return 0, fmt.Errorf("parse process status: VmRSS %q", rest)
		}
		return n << 10, nil
	}
	return 0, errors.New("parse process status: no VmRSS (has the process exited?)")
}

// guestStats asks v's agent for its stats, or says why there are none.
func (s *Service) guestStats(ctx context.Context, v store.VM) (*api.GuestStats, string) {
	ctx, cancel := context.WithTimeout(ctx, guestStatsTimeout)
	defer cancel()
	sess, _, err := s.session(ctx, v.ID)
	if err != nil {
		return nil, err.Error()
	}
	st, err := sess.Stats(ctx)
	switch {
	case agentclient.IsUnknownOp(err):
		return nil, "the guest agent predates the stats op: restart the VM to boot the current agent"
	case err != nil:
		return nil, fmt.Sprintf("ask the guest agent: %v", err)
	}
	return guestView(st), ""
}

// guestView converts the agent's stats to their API form.
func guestView(st agentproto.Stats) *api.GuestStats {
	g := &api.GuestStats{
		MemTotalBytes: clampInt64(st.MemTotal), MemAvailableBytes: clampInt64(st.MemAvailable),
		Load1: st.Load1, Load5: st.Load5, Load15: st.Load15,
		UptimeSeconds: st.Uptime, Processes: st.Procs, Filesystems: []api.FSStats{},
	}
	for _, f := range st.Filesystems {
		g.Filesystems = append(g.Filesystems, api.FSStats{Path: f.Path, SizeBytes: clampInt64(f.Size),
			UsedBytes: clampInt64(f.Used), AvailBytes: clampInt64(f.Avail), Error: f.Error})
	}
	return g
}

func clampInt64(n uint64) int64 {
	if n > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(n)
}
