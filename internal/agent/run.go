package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"banger/internal/agent/reaper"
	"banger/internal/agent/transport"
)

// Run serves the agent on the transport selected by kind (banger.transport=)
// until the transport fails. It prints the single "ready" line when the
// host channel is open.
func Run(mode, version, kind string, shutdown func(reboot bool)) error {
	l, err := transport.New(kind)
	if err != nil {
		return fmt.Errorf("open transport: %w", err)
	}
	if vs, ok := l.(*transport.VirtioSerial); ok {
		vs.Logf = Logger.Printf
		vs.Ready = func(path string) {
			Logger.Printf("ready (%s, %s, %s s after boot)", mode, path, Uptime())
		}
	}
	StartSSH(reaper.Default())
	srv := &Server{Mode: mode, Version: version, Reaper: reaper.Default(), Shutdown: shutdown}
	return srv.Serve(l)
}

// Uptime returns the first field of /proc/uptime ("" if unavailable).
func Uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	if v, err := strconv.ParseFloat(f[0], 64); err == nil {
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return f[0]
}
