package sys

import (
	"os"
	"path/filepath"
	"strconv"

	"banger/internal/procstat"
)

// othersLeft reports whether a process other than self still lives under
// procDir (a /proc): kernel threads, which no signal ends, and zombies,
// which are the reaper's, do not count. kill(-1, 0) cannot answer this for
// PID 1: it succeeds while any kernel thread exists, that is always, so a
// wait on it lasted its whole grace period at every shutdown.
func othersLeft(procDir string, self int) bool {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return true // cannot tell: wait out the grace period
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile(filepath.Join(procDir, e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		st, err := procstat.Parse(data)
		if err != nil || st.KernelThread() || st.Gone() {
			continue
		}
		return true
	}
	return false
}
