package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/errdefs"
)

func TestCPUPercent(t *testing.T) {
	host := func(pid int, uptime, cpu float64) *api.HostStats {
		return &api.HostStats{PID: pid, UptimeSeconds: uptime, CPUSeconds: cpu}
	}
	sample := func(h *api.HostStats) api.VMStats { return api.VMStats{Host: h} }
	cases := []struct {
		name          string
		before, after api.VMStats
		want          float64
		ok            bool
	}{
		{"idle", sample(host(7, 100, 5)), sample(host(7, 101, 5)), 0, true},
		{"one busy vcpu", sample(host(7, 100, 5)), sample(host(7, 102, 7)), 100, true},
		{"a quarter over half a second", sample(host(7, 10, 1)), sample(host(7, 10.5, 1.125)), 25, true},
		{"four busy vcpus exceed 100", sample(host(7, 100, 5)), sample(host(7, 101, 9)), 400, true},
		{"stopped before", sample(nil), sample(host(7, 1, 1)), 0, false},
		{"stopped after", sample(host(7, 1, 1)), sample(nil), 0, false},
		{"another process (restarted)", sample(host(7, 100, 5)), sample(host(8, 101, 5)), 0, false},
		{"no time passed", sample(host(7, 100, 5)), sample(host(7, 100, 6)), 0, false},
		{"out of order", sample(host(7, 101, 6)), sample(host(7, 100, 5)), 0, false},
		{"counter went back", sample(host(7, 100, 6)), sample(host(7, 101, 5)), 0, false},
	}
	for _, c := range cases {
		got, ok := cpuPercent(c.before, c.after)
		if ok != c.ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: cpuPercent = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0B"},
		{512, "512B"},
		{1023, "1023B"},
		{1536, "1.5K"},
		{980 << 10, "980K"},
		{10 << 20, "10M"},
		{312<<20 + 400<<10, "312M"},
		{1023<<20 + 900<<10, "1.0G"}, // rounds to 1024M: shown as 1.0G
		{1 << 30, "1G"},
		{3 << 29, "1.5G"},
		{8 << 30, "8G"},
		{10 << 30, "10G"},
		{2 << 40, "2T"},
		{1024, "1K"},
		{-1, "-"},
	} {
		if got := humanBytes(c.n); got != c.want {
			t.Errorf("humanBytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestFormatUptime(t *testing.T) {
	for _, c := range []struct {
		sec  float64
		want string
	}{
		{0, "0s"},
		{45.9, "45s"},
		{60, "1m0s"},
		{725, "12m5s"},
		{3*3600 + 12*60 + 7, "3h12m"},
		{2*86400 + 3*3600 + 59, "2d3h"},
	} {
		if got := formatUptime(c.sec); got != c.want {
			t.Errorf("formatUptime(%v) = %q, want %q", c.sec, got, c.want)
		}
	}
}

func statsRows() []statsRow {
	pct := 112.34
	return []statsRow{
		{Name: "dev", CPUPercent: &pct, VMStats: &api.VMStats{
			Name: "dev", State: api.StateRunning, VCPU: 2, MemoryMiB: 1024,
			Host: &api.HostStats{PID: 4242, UptimeSeconds: 3*3600 + 12*60, CPUSeconds: 100, RSSBytes: 312 << 20},
			Disks: []api.DiskStats{
				{Name: "root", File: "root.ext4", SizeBytes: 1 << 30, AllocatedBytes: 41 << 20},
				{Name: "work", File: "work.ext4", SizeBytes: 8 << 30, AllocatedBytes: 12 << 20},
			},
			Guest: &api.GuestStats{MemTotalBytes: 987 << 20, MemAvailableBytes: 807 << 20, Load1: 0.08},
		}},
		{Name: "old", VMStats: &api.VMStats{
			Name: "old", State: api.StateRunning, VCPU: 1, MemoryMiB: 512,
			Host:       &api.HostStats{PID: 4343, UptimeSeconds: 45, RSSBytes: 200 << 20},
			Disks:      []api.DiskStats{{Name: "root", File: "root.cow", SizeBytes: 1 << 30, AllocatedBytes: 3<<20 + 307<<10}},
			GuestError: "the guest agent predates the stats op",
		}},
		{Name: "idle", VMStats: &api.VMStats{
			Name: "idle", State: api.StateStopped, VCPU: 1, MemoryMiB: 512,
			Disks: []api.DiskStats{
				{Name: "root", File: "root.ext4", SizeBytes: 1 << 30, AllocatedBytes: 40 << 20},
				{Name: "work", File: "work.ext4", SizeBytes: 8 << 30, AllocatedBytes: 9 << 20},
			},
		}},
		{Name: "gone", Error: "banger: not_found: vm \"gone\" not found"},
	}
}

func TestStatsTable(t *testing.T) {
	var buf bytes.Buffer
	if err := writeStatsTable(&buf, statsRows()); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"NAME  STATE    CPU%   MEM          GUEST MEM USED  LOAD1  ROOT DISK  WORK DISK  UPTIME",
		"dev   running  112.3  312M / 1G    180M / 987M     0.08   41M / 1G   12M / 8G   3h12m",
		"old   running  -      200M / 512M  -               -      3.3M / 1G  -          45s",
		"idle  stopped  -      -            -               -      40M / 1G   9M / 8G    -",
		"",
	}, "\n")
	if got := buf.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestStatsJSON(t *testing.T) {
	b, err := json.Marshal(statsRows())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d objects", len(got))
	}
	dev := got[0]
	if dev["name"] != "dev" || dev["cpu_percent"] != 112.34 || dev["state"] != "running" {
		t.Errorf("dev = %v", dev)
	}
	if h, _ := dev["host"].(map[string]any); h["rss_bytes"] != float64(312<<20) {
		t.Errorf("dev host = %v", dev["host"])
	}
	if _, ok := got[2]["cpu_percent"]; ok {
		t.Errorf("a stopped vm has a cpu_percent: %v", got[2])
	}
	if gone := got[3]; gone["name"] != "gone" || gone["error"] == nil || gone["state"] != nil {
		t.Errorf("failed row = %v, want only its name and error", gone)
	}
}

func TestStatsArgumentValidation(t *testing.T) {
	_, err := run(t, "vm", "stats", "--interval", "-1s")
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--interval") {
		t.Fatalf("err = %v, want a usage error about --interval", err)
	}
	// Valid arguments get as far as the (absent) daemon.
	if _, err := run(t, "vm", "stats", "--interval", "0", "dev"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want unavailable (no daemon)", err)
	}
}
