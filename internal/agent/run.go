package agent

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"banger/internal/agent/cmdline"
	"banger/internal/agent/reaper"
	"banger/internal/agent/transport"
)

// Run serves the agent on the transport the command line names
// (banger.transport=, banger.agentports=) until the transport fails. It
// prints the single "ready" line when the host channel is open.
func Run(mode, version string, params cmdline.Params, shutdown func(reboot bool)) error {
	l, err := transport.New(params.Transport, params.Ports)
	if err != nil {
		return fmt.Errorf("open transport: %w", err)
	}
	var ready sync.Once
	report := func(path string) {
		ready.Do(func() { Logger.Printf("ready (%s, %s, %s s after boot)", mode, path, Uptime()) })
	}
	ports := []*transport.VirtioSerial{}
	switch l := l.(type) {
	case *transport.VirtioSerial:
		ports = append(ports, l)
	case *transport.Ports:
		ports = l.Ports
	case *transport.Vsock:
		report(fmt.Sprintf("vsock port %d", l.Port))
	}
	for _, vs := range ports {
		vs.Logf = Logger.Printf
		vs.Ready = report
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
