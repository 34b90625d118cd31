package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agentproto"
)

func TestParseMeminfo(t *testing.T) {
	cases := []struct {
		name         string
		text         string
		total, avail uint64
		err          bool
	}{
		{name: "modern kernel", text: "MemTotal:        1004852 kB\nMemFree:          801224 kB\nMemAvailable:     850000 kB\nBuffers:            2000 kB\nCached:            60000 kB\nSwapTotal:             0 kB\nHugePages_Total:       0\n",
			total: 1004852 << 10, avail: 850000 << 10},
		{name: "no MemAvailable: estimated", text: "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n",
			total: 1000 << 10, avail: 420 << 10},
		{name: "order does not matter", text: "MemAvailable: 5 kB\nMemTotal: 10 kB\n", total: 10 << 10, avail: 5 << 10},
		{name: "unitless lines are skipped", text: "HugePages_Total:       0\nMemTotal: 10 kB\nMemAvailable: 1 kB\n", total: 10 << 10, avail: 1 << 10},
		{name: "no MemTotal", text: "MemFree: 1 kB\n", err: true},
		{name: "empty", text: "", err: true},
		{name: "bad number", text: "MemTotal: lots kB\n", err: true},
		{name: "bad unit", text: "MemTotal: 10 MB\n", err: true},
		{name: "no value", text: "MemTotal:\n", err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			total, avail, err := parseMeminfo(strings.NewReader(c.text))
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if total != c.total || avail != c.avail {
				t.Fatalf("got total %d avail %d, want %d %d", total, avail, c.total, c.avail)
			}
		})
	}
}

func TestParseLoadavg(t *testing.T) {
	cases := []struct {
		text        string
		l1, l5, l15 float64
		err         bool
	}{
		{text: "0.08 0.03 0.01 1/87 412\n", l1: 0.08, l5: 0.03, l15: 0.01},
		{text: "12.50 7.25 3.00 9/1020 31337", l1: 12.5, l5: 7.25, l15: 3},
		{text: "0.00 0.00 0.00", l1: 0, l5: 0, l15: 0},
		{text: "0.08 0.03", err: true},
		{text: "", err: true},
		{text: "x 0.03 0.01 1/87 412", err: true},
	}
	for _, c := range cases {
		l1, l5, l15, err := parseLoadavg(c.text)
		if (err != nil) != c.err || l1 != c.l1 || l5 != c.l5 || l15 != c.l15 {
			t.Errorf("parseLoadavg(%q) = %v %v %v, %v; want %v %v %v, error %v", c.text, l1, l5, l15, err, c.l1, c.l5, c.l15, c.err)
		}
	}
}

func TestParseUptime(t *testing.T) {
	cases := []struct {
		text string
		want float64
		err  bool
	}{
		{text: "353.17 1310.95\n", want: 353.17},
		{text: "0.51 0.40", want: 0.51},
		{text: "", err: true},
		{text: "soon 1.0", err: true},
	}
	for _, c := range cases {
		got, err := parseUptime(c.text)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("parseUptime(%q) = %v, %v; want %v, error %v", c.text, got, err, c.want, c.err)
		}
	}
}

func TestCountProcs(t *testing.T) {
	cases := []struct {
		names []string
		want  int
	}{
		{nil, 0},
		{[]string{"1", "2", "412"}, 3},
		{[]string{"1", "self", "thread-self", "meminfo", "net", "sys", "1x", "", "31337"}, 2},
	}
	for _, c := range cases {
		if got := countProcs(c.names); got != c.want {
			t.Errorf("countProcs(%q) = %d, want %d", c.names, got, c.want)
		}
	}
}

func TestFSUsage(t *testing.T) {
	cases := []struct {
		name                        string
		blocks, bfree, bavail, unit uint64
		want                        agentproto.FSStats
	}{
		{name: "with root reserve", blocks: 1000, bfree: 600, bavail: 550, unit: 4096,
			want: agentproto.FSStats{Path: "/", Size: 1000 * 4096, Used: 400 * 4096, Avail: 550 * 4096}},
		{name: "empty", blocks: 100, bfree: 100, bavail: 100, unit: 1024,
			want: agentproto.FSStats{Path: "/", Size: 100 << 10, Avail: 100 << 10}},
		{name: "full", blocks: 100, bfree: 0, bavail: 0, unit: 512,
			want: agentproto.FSStats{Path: "/", Size: 100 * 512, Used: 100 * 512}},
		{name: "free above blocks (racing counters) is not negative", blocks: 10, bfree: 11, bavail: 11, unit: 1,
			want: agentproto.FSStats{Path: "/", Size: 10, Avail: 11}},
	}
	for _, c := range cases {
		if got := fsUsage("/", c.blocks, c.bfree, c.bavail, c.unit); got != c.want {
			t.Errorf("%s: fsUsage = %+v, want %+v", c.name, got, c.want)
		}
	}
}

// readStats on a fake proc tree: every part of the reply comes from its
// file, and an unreadable mount is reported, not fatal.
func TestReadStats(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("meminfo", "MemTotal: 2048 kB\nMemAvailable: 1024 kB\n")
	write("loadavg", "1.50 0.75 0.25 2/90 77\n")
	write("uptime", "42.00 80.00\n")
	for _, d := range []string{"1", "77", "self", "net"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(root, "no-such-mount")
	st, err := readStats(root, []string{root, missing})
	if err != nil {
		t.Fatal(err)
	}
	if st.MemTotal != 2<<20 || st.MemAvailable != 1<<20 || st.Load1 != 1.5 || st.Load15 != 0.25 || st.Uptime != 42 || st.Procs != 2 {
		t.Errorf("stats = %+v", st)
	}
	if len(st.Filesystems) != 2 {
		t.Fatalf("filesystems = %+v, want two", st.Filesystems)
	}
	if fs := st.Filesystems[0]; fs.Path != root || fs.Error != "" || fs.Size == 0 || fs.Used > fs.Size {
		t.Errorf("filesystem of the temp dir = %+v", fs)
	}
	if fs := st.Filesystems[1]; fs.Path != missing || !strings.Contains(fs.Error, "statfs") {
		t.Errorf("missing mount = %+v, want a statfs error", fs)
	}
	if err := os.Remove(filepath.Join(root, "loadavg")); err != nil {
		t.Fatal(err)
	}
	if _, err := readStats(root, nil); err == nil || !strings.Contains(err.Error(), "loadavg") {
		t.Errorf("without loadavg: err = %v", err)
	}
}

// The stats op end to end over a real session, reading this machine's /proc.
func TestStatsOp(t *testing.T) {
	h := newHost(t, testServer())
	st, _, rep := h.call(agentproto.Request{Op: agentproto.OpStats})
	st.Close()
	if !rep.OK || rep.Stats == nil {
		t.Fatalf("reply = %+v", rep)
	}
	s := rep.Stats
	if s.MemTotal == 0 || s.MemAvailable == 0 || s.MemAvailable > s.MemTotal || s.Uptime <= 0 || s.Procs < 1 {
		t.Errorf("stats = %+v", s)
	}
	if len(s.Filesystems) != 2 || s.Filesystems[0].Path != "/" || s.Filesystems[0].Size == 0 {
		t.Errorf("filesystems = %+v", s.Filesystems)
	}
}
