package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/procstat"
	"banger/internal/version"
)

// The daemon commands: bangerd runs on demand (the CLI starts it) unless a
// service manager keeps it; running VMs outlive it either way, so stopping
// or restarting it is safe at any time.

func newDaemonCommand(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Show, stop or restart bangerd (running VMs keep running)",
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether bangerd runs, its version, pid, socket and what manages it",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.daemonStatus(cmd.Context(), asJSON)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd; VMs keep running and the next banger command starts it again",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := e.stopDaemon(cmd.Context())
			if err != nil {
				return err
			}
			if p == nil {
				fmt.Fprintln(e.stdout, "bangerd is not running")
				return nil
			}
			fmt.Fprintf(e.stdout, "bangerd %s (pid %d) stopped; running VMs keep running\n", p.Version, p.PID)
			return nil
		},
	}
	restart := &cobra.Command{
		Use:   "restart",
		Short: "Restart bangerd, e.g. to run newly built binaries; VMs keep running and are adopted",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			old, err := e.stopDaemon(ctx)
			if err != nil {
				return err
			}
			p, err := e.cl.Ensure(ctx)
			if err != nil {
				return err
			}
			if old != nil {
				fmt.Fprintf(e.stdout, "bangerd restarted: %s (pid %d) -> %s (pid %d)\n", old.Version, old.PID, p.Version, p.PID)
			} else {
				fmt.Fprintf(e.stdout, "bangerd started: %s (pid %d)\n", p.Version, p.PID)
			}
			return nil
		},
	}
	c.AddCommand(status, stop, restart)
	return c
}

// daemonStatus prints what answers on the socket, without starting it.
func (e *env) daemonStatus(ctx context.Context, asJSON bool) error {
	p, err := e.cl.Ping(ctx)
	running := err == nil
	if asJSON {
		out := struct {
			Running bool      `json:"running"`
			Socket  string    `json:"socket"`
			Log     string    `json:"log"`
			CLI     string    `json:"cli_version"`
			Daemon  *api.Ping `json:"daemon,omitempty"`
		}{Running: running, Socket: e.cl.Socket, Log: e.cl.LogPath, CLI: version.Version}
		if running {
			out.Daemon = &p
		}
		return printJSON(e.stdout, out)
	}
	if !running {
		fmt.Fprintf(e.stdout, "bangerd: not running (socket %s); the next banger command starts it\n", e.cl.Socket)
		return nil
	}
	managed := p.Managed
	if managed == "" {
		managed = "started on demand by banger"
	}
	fmt.Fprintf(e.stdout, "bangerd: running\nversion: %s%s\npid:     %d\nsince:   %s\nsocket:  %s\nmanaged: %s\n",
		p.Version, versionNote(p), p.PID, p.StartedAt.Local().Format(time.DateTime), e.cl.Socket, managed)
	if p.Managed == "" {
		fmt.Fprintf(e.stdout, "log:     %s\n", e.cl.LogPath)
	}
	return nil
}

// versionNote flags a daemon older or newer than this CLI.
func versionNote(p api.Ping) string {
	if p.Version == version.Version {
		return ""
	}
	return fmt.Sprintf(" (this banger is %s: %s)", version.Version, restartHint(p))
}

func restartHint(p api.Ping) string {
	switch p.Managed {
	case api.ManagedSystemd:
		return "banger system restart runs the new one"
	case api.ManagedSystemRun:
		return "restart banger system run to run the new one"
	}
	return "banger daemon restart runs the new one"
}

// stopDaemon asks an on-demand bangerd to stop and waits until its
// process has exited (it holds the owner's lock until then, so a new one
// could not start before). It returns the daemon that was stopped, or nil
// if none was running.
func (e *env) stopDaemon(ctx context.Context) (*api.Ping, error) {
	p, err := e.cl.Ping(ctx)
	if err != nil {
		return nil, nil
	}
	// Its start time tells its exit from a later process reusing the pid;
	// unreadable (another pid namespace), the socket going quiet is all
	// there is to wait for.
	before, statErr := procstat.Read(p.PID)
	if err := e.cl.Do(ctx, "POST", "/v1/shutdown", nil, nil); err != nil {
		return nil, fmt.Errorf("stop bangerd: %w", err)
	}
	exited := func() bool {
		if statErr != nil {
			_, err := e.cl.Ping(ctx)
			return err != nil
		}
		now, err := procstat.Read(p.PID)
		return err != nil || now.Gone() || now.StartTime != before.StartTime
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if exited() {
			return &p, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, errdefs.Unavailable("bangerd (pid %d) has not exited 15s after it was asked to stop; see %s", p.PID, e.cl.LogPath)
}

// warnVersion tells the user, once, that the bangerd they talk to runs
// other binaries than this CLI (say, after a rebuild).
func (e *env) warnVersion(p api.Ping) {
	if e.versionChecked || p.Version == version.Version {
		return
	}
	e.versionChecked = true
	fmt.Fprintf(e.stderr, "banger: note: bangerd runs version %s, this banger is %s; %s (VMs keep running)\n",
		p.Version, version.Version, restartHint(p))
}
