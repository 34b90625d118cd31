package sys

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOthersLeft(t *testing.T) {
	// stat lines: field 3 is the state, field 9 the PF_* flags
	// (0x00200000 is PF_KTHREAD).
	const (
		initStat    = "1 (banger-agent) S 0 1 1 0 -1 4194560 0 0 0 0 1 1 0 0 20 0 3 0 10 0 0"
		kthread     = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0"
		kworker     = "37 (kworker/0:1) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"
		zombie      = "99 (sh) Z 1 99 99 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0 900 0 0"
		userProcess = "120 (sleep) S 1 120 120 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 950 0 0"
	)
	for _, tc := range []struct {
		name  string
		procs map[string]string
		want  bool
	}{
		{"only the caller and kernel threads", map[string]string{"1": initStat, "2": kthread, "37": kworker}, false},
		{"a zombie is the reaper's", map[string]string{"1": initStat, "2": kthread, "99": zombie}, false},
		{"a user process", map[string]string{"1": initStat, "2": kthread, "120": userProcess}, true},
		{"a process gone between listing and reading", map[string]string{"1": initStat, "121": ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for pid, stat := range tc.procs {
				if err := os.MkdirAll(filepath.Join(dir, pid), 0o755); err != nil {
					t.Fatal(err)
				}
				if stat == "" {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(stat+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Entries that are not processes are skipped.
			if err := os.WriteFile(filepath.Join(dir, "meminfo"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if got := othersLeft(dir, 1); got != tc.want {
				t.Errorf("othersLeft = %v, want %v", got, tc.want)
			}
		})
	}
	if !othersLeft(filepath.Join(t.TempDir(), "missing"), 1) {
		t.Error("an unreadable /proc must count as processes left")
	}
}
