package e2e

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// vmStats is the part of `banger vm stats --json` the e2e tests check.
type vmStats struct {
	Name       string   `json:"name"`
	State      string   `json:"state"`
	MemoryMiB  int      `json:"memory_mib"`
	CPUPercent *float64 `json:"cpu_percent"`
	Error      string   `json:"error"`
	Host       *struct {
		PID        int     `json:"pid"`
		RSSBytes   int64   `json:"rss_bytes"`
		CPUSeconds float64 `json:"cpu_seconds"`
	} `json:"host"`
	Disks []struct {
		Name           string `json:"name"`
		SizeBytes      int64  `json:"size_bytes"`
		AllocatedBytes int64  `json:"allocated_bytes"`
	} `json:"disks"`
	Guest *struct {
		MemTotalBytes int64    `json:"mem_total_bytes"`
		Load1         *float64 `json:"load1"`
		Processes     int      `json:"processes"`
		Filesystems   []struct {
			Path      string `json:"path"`
			SizeBytes int64  `json:"size_bytes"`
		} `json:"filesystems"`
	} `json:"guest"`
	GuestError string `json:"guest_error"`
}

// checkStats checks what `banger vm stats NAME --json` reports for a VM:
// while it runs, its VMM's memory and CPU, the guest's own memory (close
// to the configured size), load and filesystems, and both disks allocated;
// once stopped, its state and disks only.
func checkStats(t *testing.T, name string, running bool) {
	t.Helper()
	var rows []vmStats
	out := h.must(t, "vm", "stats", name, "--json", "--interval", "500ms")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("vm stats --json: %v\n%s", err, out)
	}
	if len(rows) != 1 || rows[0].Name != name || rows[0].Error != "" {
		t.Fatalf("vm stats %s = %s", name, out)
	}
	s := rows[0]
	if len(s.Disks) != 2 || s.Disks[0].Name != "root" || s.Disks[1].Name != "work" {
		t.Fatalf("disks = %+v, want root and work", s.Disks)
	}
	for _, d := range s.Disks {
		if d.AllocatedBytes <= 0 || d.SizeBytes <= 0 {
			t.Errorf("%s disk: %d of %d bytes allocated, want some", d.Name, d.AllocatedBytes, d.SizeBytes)
		}
	}
	if !running {
		if s.State != "stopped" || s.Host != nil || s.Guest != nil || s.CPUPercent != nil {
			t.Errorf("stats of a stopped vm = %s", out)
		}
		return
	}
	if s.State != "running" || s.Host == nil || s.Host.RSSBytes <= 0 || s.Host.PID <= 0 || s.CPUPercent == nil || *s.CPUPercent < 0 {
		t.Errorf("host part = %s", out)
	}
	g := s.Guest
	if g == nil {
		t.Fatalf("no guest part: %q", s.GuestError)
	}
	want := float64(s.MemoryMiB) * (1 << 20)
	if got := float64(g.MemTotalBytes); math.Abs(got-want) > 0.15*want {
		t.Errorf("guest memory total %d bytes, want within 15%% of the configured %d MiB", g.MemTotalBytes, s.MemoryMiB)
	}
	if g.Load1 == nil || g.Processes < 1 || len(g.Filesystems) != 2 || g.Filesystems[1].Path != "/root" || g.Filesystems[1].SizeBytes <= 0 {
		t.Errorf("guest part = %s", out)
	}
	table := h.must(t, "vm", "stats", name, "--interval", "500ms")
	if !strings.HasPrefix(table, "NAME ") || !strings.Contains(table, "\n"+name+" ") {
		t.Errorf("vm stats table = %q", table)
	}
	t.Logf("vm stats %s:\n%s", name, table)
}
