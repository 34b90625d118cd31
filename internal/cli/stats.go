package cli

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/api/client"
	"banger/internal/textsafe"
)

// statsRow is one VM's line of vm stats: its second sample, the CPU rate
// between the two, or why it has none.
type statsRow struct {
	Name string `json:"name"`
	*api.VMStats
	// CPUPercent is absent when not measured (a stopped VM, --interval 0).
	CPUPercent *float64 `json:"cpu_percent,omitempty"`
	Error      string   `json:"error,omitempty"`
}

func newVMStatsCommand(e *env) *cobra.Command {
	var asJSON bool
	var interval time.Duration
	c := &cobra.Command{
		Use:   "stats [NAME...]",
		Short: "Show what VMs cost: CPU, memory, load and disk use",
		Long: "Show what VMs cost, host and guest side. Without NAME, every running VM; a stopped VM named\n" +
			"shows its state and disks only.\n\n" +
			"CPU%            the VMM process's CPU time over --interval, in percent of one host CPU: a VM\n" +
			"                with several vCPUs can exceed 100\n" +
			"MEM             the VMM's resident memory on the host / the VM's configured memory\n" +
			"GUEST MEM USED  what the guest counts as used (total minus available) / its total\n" +
			"LOAD1           the guest's one-minute load average\n" +
			"ROOT, WORK DISK bytes the host allocated for the disk file / its size (sparse files and\n" +
			"                reflinks allocate less; with dm storage the root is the snapshot's COW file)\n" +
			"UPTIME          how long the VMM process has run\n\n" +
			"--json prints one object per VM with every figure (guest filesystems, processes and\n" +
			"cpu_percent included); guest_error says why a running VM has no guest part, for example\n" +
			"an agent older than this banger (restart the VM to update it).",
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < 0 {
				return usageError{fmt.Errorf("--interval %s: must not be negative", interval)}
			}
			ctx := cmd.Context()
			cl, err := e.client(ctx)
			if err != nil {
				return err
			}
			names := dedupe(args)
			if len(names) == 0 {
				if names, err = runningVMs(ctx, cl); err != nil {
					return err
				}
			}
			rows := make([]statsRow, len(names))
			var wg sync.WaitGroup
			for i, n := range names {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rows[i] = sampleVM(ctx, cl, n, interval)
				}()
			}
			wg.Wait()
			failed := false
			for _, r := range rows {
				if r.Error != "" {
					failed = true
				}
			}
			if asJSON {
				if err := printJSON(e.stdout, rows); err != nil {
					return err
				}
			} else {
				if err := writeStatsTable(e.stdout, rows); err != nil {
					return err
				}
				for _, r := range rows {
					switch {
					case r.Error != "":
						fmt.Fprintln(e.stderr, r.Error)
					case r.GuestError != "":
						fmt.Fprintf(e.stderr, "banger: %s: no guest figures: %s\n", r.Name, textsafe.Line(r.GuestError))
					}
				}
			}
			if failed {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&interval, "interval", time.Second, "time between the two samples CPU% is computed from (0: one sample, no CPU%)")
	return c
}

// runningVMs names every running VM.
func runningVMs(ctx context.Context, cl *client.Client) ([]string, error) {
	var vms []api.VM
	if err := cl.Do(ctx, http.MethodGet, "/v1/vms", nil, &vms); err != nil {
		return nil, err
	}
	var names []string
	for _, v := range vms {
		if v.State == api.StateRunning {
			names = append(names, v.Name)
		}
	}
	return names, nil
}

// sampleVM samples name twice, interval apart, when it has a VMM process
// to measure; once otherwise.
func sampleVM(ctx context.Context, cl *client.Client, name string, interval time.Duration) statsRow {
	row := statsRow{Name: name}
	first, err := cl.VMStats(ctx, name)
	if err != nil {
		row.Error = formatError(err)
		return row
	}
	if first.Host == nil || interval == 0 {
		row.VMStats = &first
		return row
	}
	select {
	case <-ctx.Done():
		row.Error = formatError(ctx.Err())
		return row
	case <-time.After(interval):
	}
	second, err := cl.VMStats(ctx, name)
	if err != nil {
		row.Error = formatError(err)
		return row
	}
	row.VMStats = &second
	if pct, ok := cpuPercent(first, second); ok {
		row.CPUPercent = &pct
	}
	return row
}

// cpuPercent is the VMM's CPU use between two samples of one process, in
// percent of one host CPU (several busy vCPUs exceed 100). The interval is
// the process's age difference, read on the host's boot clock, so neither
// request latency nor a wall clock step skews it. ok is false unless both
// samples measure the same running process over a positive interval.
func cpuPercent(before, after api.VMStats) (pct float64, ok bool) {
	a, b := before.Host, after.Host
	if a == nil || b == nil || a.PID != b.PID {
		return 0, false
	}
	wall := b.UptimeSeconds - a.UptimeSeconds
	cpu := b.CPUSeconds - a.CPUSeconds
	if wall <= 0 || cpu < 0 {
		return 0, false
	}
	return cpu / wall * 100, true
}

// writeStatsTable prints rows that have a sample; failed rows are
// reported apart.
func writeStatsTable(w io.Writer, rows []statsRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tCPU%\tMEM\tGUEST MEM USED\tLOAD1\tROOT DISK\tWORK DISK\tUPTIME")
	for _, r := range rows {
		if r.VMStats == nil {
			continue
		}
		s := r.VMStats
		cpu, mem, guestMem, load, uptime := "-", "-", "-", "-", "-"
		if r.CPUPercent != nil {
			cpu = strconv.FormatFloat(*r.CPUPercent, 'f', 1, 64)
		}
		if s.Host != nil {
			mem = humanBytes(s.Host.RSSBytes) + " / " + humanBytes(int64(s.MemoryMiB)<<20)
			uptime = formatUptime(s.Host.UptimeSeconds)
		}
		if g := s.Guest; g != nil {
			guestMem = humanBytes(g.MemTotalBytes-g.MemAvailableBytes) + " / " + humanBytes(g.MemTotalBytes)
			load = strconv.FormatFloat(g.Load1, 'f', 2, 64)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.State, cpu, mem, guestMem, load,
			diskColumn(s.Disks, "root"), diskColumn(s.Disks, "work"), uptime)
	}
	return tw.Flush()
}

// diskColumn is "allocated / size" of the named disk, or "-".
func diskColumn(disks []api.DiskStats, name string) string {
	for _, d := range disks {
		if d.Name == name {
			return humanBytes(d.AllocatedBytes) + " / " + humanBytes(d.SizeBytes)
		}
	}
	return "-"
}

// humanBytes prints n in binary units with three significant figures at
// most: "0B", "980K", "312M", "1.5G", "8G".
func humanBytes(n int64) string {
	if n < 0 {
		return "-"
	}
	const units = "BKMGTPE"
	f := float64(n)
	i := 0
	// 1023.5 and up rounds to 1024: print it in the next unit instead.
	for f >= 1023.5 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if i > 0 && f < 9.95 && f != math.Trunc(f) {
		return strconv.FormatFloat(f, 'f', 1, 64) + units[i:i+1]
	}
	return strconv.FormatFloat(f, 'f', 0, 64) + units[i:i+1]
}

// formatUptime prints seconds as its two largest units: "45s", "12m5s",
// "3h12m", "2d3h".
func formatUptime(sec float64) string {
	d := time.Duration(sec) * time.Second
	days, h, m, s := int(d/(24*time.Hour)), int(d/time.Hour)%24, int(d/time.Minute)%60, int(d/time.Second)%60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd%dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh%dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%ds", m, s)
	default:
		return fmt.Sprintf("%ds", s)
	}
}
