package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/sizes"
	"banger/internal/textsafe"
	"banger/internal/workspace"
)

func newVMCommand(e *env) *cobra.Command {
	c := &cobra.Command{Use: "vm", Short: "Create, run and manage VMs"}
	c.AddCommand(newVMRunCommand(e), newVMCreateCommand(e), newVMListCommand(e, "list"), newVMShowCommand(e),
		newVMLogsCommand(e), newVMExecCommand(e), newVMSetCommand(e), newVMPruneCommand(e),
		newVMPortsCommand(e), newVMForwardCommand(e), newVMSSHCommand(e), newVMSSHProxyCommand(e), newVMWorkspaceCommand(e), newVMCommitCommand(e), newVMStatsCommand(e))
	for _, lc := range []struct{ use, short, path string }{
		{"start", "Start stopped VMs", "start"},
		{"stop", "Stop VMs gracefully (agent shutdown, then SIGTERM, then SIGKILL)", "stop"},
		{"restart", "Stop and start VMs", "restart"},
		{"kill", "Stop VMs at once (SIGKILL), when stop hangs", "kill"},
		{"delete", "Stop VMs and delete their disks (irreversible)", ""},
	} {
		c.AddCommand(newLifecycleCommand(e, lc.use, lc.short, lc.path))
	}
	return c
}

func newPsCommand(e *env) *cobra.Command {
	c := newVMListCommand(e, "ps")
	c.Short = "List VMs (same as vm list)"
	return c
}

// vmFlags are the sizing flags of vm create and vm run.
type vmFlags struct {
	name, image, kernel, disk string
	vcpu, memory              int
	nat                       bool
}

func (f *vmFlags) register(e *env, c *cobra.Command) {
	c.Flags().StringVar(&f.name, "name", "", "VM name (1-63 of a-z, 0-9, '-'; generated when empty)")
	c.Flags().StringVar(&f.image, "image", "", "image name (default: default_image_name, else the built-in minimal image)")
	c.Flags().StringVar(&f.kernel, "kernel", "", "kernel name (default: default_kernel_name)")
	c.Flags().IntVar(&f.vcpu, "vcpu", 0, "virtual CPUs (default from config or host)")
	c.Flags().IntVar(&f.memory, "memory", 0, "memory in MiB (default from config or host)")
	c.Flags().StringVar(&f.disk, "disk-size", "", "work disk size, e.g. 8G (default from config)")
	c.Flags().BoolVar(&f.nat, "nat", false, "let the guest reach outside networks (masqueraded); needs the root helper")
	_ = c.RegisterFlagCompletionFunc("image", completeImages(e))
	_ = c.RegisterFlagCompletionFunc("kernel", completeKernels(e))
}

func (f *vmFlags) request(c *cobra.Command) api.CreateVMRequest {
	return api.CreateVMRequest{
		Name: f.name, Image: f.image, Kernel: f.kernel, VCPU: f.vcpu, MemoryMiB: f.memory, DiskSize: f.disk,
		VCPUSet: c.Flags().Changed("vcpu"), MemorySet: c.Flags().Changed("memory"), NAT: f.nat,
	}
}

func (e *env) create(ctx context.Context, req api.CreateVMRequest) (api.VM, error) {
	cl, err := e.client(ctx)
	if err != nil {
		return api.VM{}, err
	}
	var v api.VM
	err = cl.Stream(ctx, http.MethodPost, "/v1/vms", req, &v, e.progress())
	return v, err
}

func newVMCreateCommand(e *env) *cobra.Command {
	var f vmFlags
	var noStart, asJSON bool
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a VM and start it (unless --no-start)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := f.request(cmd)
			req.NoStart = noStart
			v, err := e.create(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, v)
			}
			fmt.Fprintln(e.stdout, v.Name)
			return nil
		},
	}
	f.register(e, c)
	c.Flags().BoolVar(&noStart, "no-start", false, "create the disks only")
	c.Flags().BoolVar(&asJSON, "json", false, "print the VM as JSON")
	return c
}

func newVMRunCommand(e *env) *cobra.Command {
	var f vmFlags
	var rm, detach, tty bool
	var wf workspaceFlags
	c := &cobra.Command{
		Use:   "run [PATH] [flags] [-- CMD ARGS...]",
		Short: "Create and start a VM, then run CMD in it or open a shell",
		Long: "Create and start a VM and wait until it is ready. With -- CMD, run CMD in it: its stdout and\n" +
			"stderr are kept apart and banger exits with its status. Without, open an interactive shell.\n" +
			"With PATH (a git work tree), its tracked files are copied to /root/<repo> first and CMD runs\n" +
			"there; --include-untracked adds untracked files git does not ignore, --dry-run lists the files,\n" +
			"--branch NAME [--from REF] checks out a new guest branch (at REF, with REF's files).\n" +
			"--rm deletes the VM afterwards; -d leaves it running in the background.",
		RunE: func(cmd *cobra.Command, args []string) error {
			var argv []string
			pos := args
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				pos, argv = args[:dash], args[dash:]
				if len(argv) == 0 {
					return usageError{fmt.Errorf("nothing after --: give a command to run")}
				}
			}
			if len(pos) > 1 {
				return usageError{fmt.Errorf("unexpected argument %q: give at most one workspace PATH, and put the command after --", pos[1])}
			}
			var ws *workspace.Workspace
			if len(pos) == 1 {
				var err error
				if ws, err = prepareWorkspace(cmd.Context(), pos[0], wf.opts); err != nil {
					return err
				}
				defer ws.Close()
				if wf.dryRun {
					e.listWorkspace(ws)
					return nil
				}
			} else if wf.used() {
				return usageError{errors.New("--include-untracked, --dry-run, --branch and --from need a workspace PATH")}
			}
			if detach && rm {
				return usageError{fmt.Errorf("-d and --rm cannot be combined")}
			}
			if detach && len(argv) > 0 {
				return usageError{fmt.Errorf("-d cannot be combined with a command")}
			}
			ctx := cmd.Context()
			start := time.Now()
			v, err := e.create(ctx, f.request(cmd))
			if err != nil {
				return err
			}
			if p := e.progress(); p != nil {
				p(fmt.Sprintf("%s ready in %s", v.Name, time.Since(start).Round(10*time.Millisecond)))
			}
			if ws != nil {
				if err := e.copyWorkspace(ctx, v.Name, ws, false); err != nil {
					if rm {
						_ = e.deleteVM(context.WithoutCancel(ctx), v.Name)
					}
					return err
				}
			}
			if detach {
				fmt.Fprintln(e.stdout, v.Name)
				return nil
			}
			var code int
			var runErr error
			if len(argv) == 0 && isTTY(e.stdin) && isTTY(e.stdout) && haveSSH() {
				// An interactive session is an SSH session, so agent
				// forwarding, escapes and terminal handling are OpenSSH's.
				if err := e.waitSSH(ctx, v.Name, sshWait); err != nil {
					return err // the VM stays, for inspection
				}
				code, runErr = e.sshSession(ctx, v.Name)
			} else {
				req := api.ExecRequest{Argv: argv}
				if ws != nil {
					req.Cwd = ws.GuestDir()
				}
				code, runErr = e.execWith(ctx, v.Name, req, tty || (len(argv) == 0 && isTTY(e.stdin) && isTTY(e.stdout)))
			}
			if rm {
				if err := e.deleteVM(context.WithoutCancel(ctx), v.Name); err != nil && runErr == nil {
					runErr = err
				}
			} else if len(argv) == 0 && isTTY(e.stderr) {
				fmt.Fprintf(e.stderr, "VM %s is still running: 'banger vm stop %s' to stop it, 'banger vm delete %s' to remove it.\n", v.Name, v.Name, v.Name)
			}
			if runErr != nil {
				return runErr
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f.register(e, c)
	c.Flags().BoolVar(&rm, "rm", false, "delete the VM when the command or shell ends")
	c.Flags().BoolVarP(&detach, "detach", "d", false, "start the VM and return")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal for CMD")
	wf.register(c)
	return c
}

func (e *env) deleteVM(ctx context.Context, name string) error {
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	return cl.Do(ctx, http.MethodDelete, "/v1/vms/"+url.PathEscape(name), nil, nil)
}

func newVMExecCommand(e *env) *cobra.Command {
	var tty bool
	var envs []string
	var cwd string
	c := &cobra.Command{
		Use:               "exec NAME [-- CMD ARGS...]",
		Short:             "Run a command in a running VM (a shell when no command is given)",
		Args:              minArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv := args[0], args[1:]
			useTTY := tty || (len(argv) == 0 && isTTY(e.stdin) && isTTY(e.stdout))
			code, err := e.execWith(cmd.Context(), name, api.ExecRequest{Argv: argv, Env: envs, Cwd: cwd}, useTTY)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	c.Flags().StringArrayVarP(&envs, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	c.Flags().StringVarP(&cwd, "workdir", "w", "", "working directory in the guest (default /root)")
	return c
}

func newLifecycleCommand(e *env, use, short, path string) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:               use + " NAME...",
		Short:             short,
		Args:              minArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl, err := e.client(ctx)
			if err != nil {
				return err
			}
			names := dedupe(args)
			results := make([]api.NameResult, len(names))
			var wg sync.WaitGroup
			for i, n := range names {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var v api.VM
					var err error
					p := "/v1/vms/" + url.PathEscape(n)
					switch path {
					case "":
						err = cl.Do(ctx, http.MethodDelete, p, nil, nil)
					case "start", "restart":
						err = cl.Stream(ctx, http.MethodPost, p+"/"+path, nil, &v, nil)
					default:
						err = cl.Do(ctx, http.MethodPost, p+"/"+path, nil, &v)
					}
					results[i] = api.NameResult{Name: n}
					if err != nil {
						results[i].Error = &api.Error{Message: formatError(err)}
					} else if path != "" {
						results[i].VM = &v
					}
				}()
			}
			wg.Wait()
			failed := 0
			for _, r := range results {
				if r.Error != nil {
					failed++
				}
			}
			if asJSON {
				if err := printJSON(e.stdout, results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					if r.Error != nil {
						fmt.Fprintln(e.stderr, textsafe.Line(r.Error.Message))
					} else {
						fmt.Fprintln(e.stdout, r.Name)
					}
				}
			}
			if failed > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print results as JSON")
	return c
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func newVMListCommand(e *env, use string) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   use,
		Short: "List VMs",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var vms []api.VM
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/vms", nil, &vms); err != nil {
				return err
			}
			if asJSON {
				if vms == nil {
					vms = []api.VM{}
				}
				return printJSON(e.stdout, vms)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tIMAGE\tVCPU\tMEMORY\tDISK\tADDRESS\tCREATED")
			for _, v := range vms {
				addr := v.GuestIP
				if addr == "" {
					addr = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%dM\t%s\t%s\t%s\n", v.Name, v.State, v.Image, v.VCPU, v.MemoryMiB,
					sizes.Format(v.DiskSize), addr, ago(v.CreatedAt))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolP("all", "a", false, "accepted for familiarity: all VMs are always listed")
	return c
}

func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func newVMShowCommand(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show one VM",
		Args:              exactArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v api.VM
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/vms/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, v)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			rows := [][2]string{
				{"name", v.Name}, {"id", v.ID}, {"state", v.State}, {"image", v.Image}, {"kernel", v.Kernel},
				{"vcpu", fmt.Sprint(v.VCPU)}, {"memory", fmt.Sprintf("%d MiB", v.MemoryMiB)}, {"disk", sizes.Format(v.DiskSize)},
				{"root disk", v.RootDisk},
				{"vmm", v.VMM}, {"address", v.GuestIP}, {"dns name", v.DNSName},
				{"created", v.CreatedAt.Local().Format(time.RFC3339)}, {"dir", v.Dir}, {"console", v.ConsoleLog},
			}
			if v.NAT {
				rows = append(rows, [2]string{"nat", "on"})
			}
			if v.PID != 0 {
				rows = append(rows, [2]string{"pid", fmt.Sprint(v.PID)})
			}
			if v.LastError != "" {
				rows = append(rows, [2]string{"last error", v.LastError})
			}
			for _, r := range rows {
				if r[1] != "" {
					// The last error may quote the guest.
					fmt.Fprintf(tw, "%s:\t%s\n", r[0], textsafe.Line(r[1]))
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newVMLogsCommand(e *env) *cobra.Command {
	var follow, raw bool
	c := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console (-f follows)",
		Long: "Print what the VM wrote to its serial console, oldest first, as printable text: escape\n" +
			"sequences (colours, cursor moves, titles) and carriage returns are dropped, other control\n" +
			"characters are shown escaped (\\x07). The guest writes the console, so --raw, which prints\n" +
			"its bytes as they are, lets it act on your terminal.",
		Args:              exactArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := e.client(cmd.Context())
			if err != nil {
				return err
			}
			q := ""
			if follow {
				q = "?follow=1"
			}
			body, err := cl.Raw(cmd.Context(), http.MethodGet, "/v1/vms/"+url.PathEscape(args[0])+"/logs"+q)
			if err != nil {
				return err
			}
			defer body.Close()
			return copyConsole(cmd.Context(), e.stdout, body, raw)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	c.Flags().BoolVar(&raw, "raw", false, "print the console's bytes unfiltered, escape sequences included")
	return c
}

// copyConsole copies a console log to w, through textsafe's filter unless
// raw. An interrupted follow is not an error.
func copyConsole(ctx context.Context, w io.Writer, body io.Reader, raw bool) error {
	if !raw {
		tw := textsafe.NewWriter(w)
		defer tw.Close()
		w = tw
	}
	_, err := io.Copy(w, body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func newVMSetCommand(e *env) *cobra.Command {
	var vcpu, memory int
	var disk string
	var asJSON bool
	c := &cobra.Command{
		Use:               "set NAME...",
		Short:             "Change stopped VMs' vcpu, memory or work disk size (grow only)",
		Args:              minArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.SetVMRequest
			if cmd.Flags().Changed("vcpu") {
				req.VCPU = &vcpu
			}
			if cmd.Flags().Changed("memory") {
				req.MemoryMiB = &memory
			}
			if cmd.Flags().Changed("disk-size") {
				req.DiskSize = &disk
			}
			var out []api.VM
			for _, n := range dedupe(args) {
				var v api.VM
				if err := e.call(cmd.Context(), http.MethodPatch, "/v1/vms/"+url.PathEscape(n), req, &v); err != nil {
					return err
				}
				out = append(out, v)
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			for _, v := range out {
				fmt.Fprintf(e.stdout, "%s: %d vcpu, %d MiB, %s disk\n", v.Name, v.VCPU, v.MemoryMiB, sizes.Format(v.DiskSize))
			}
			return nil
		},
	}
	c.Flags().IntVar(&vcpu, "vcpu", 0, "virtual CPUs")
	c.Flags().IntVar(&memory, "memory", 0, "memory in MiB")
	c.Flags().StringVar(&disk, "disk-size", "", "new work disk size (grow only)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newVMPruneCommand(e *env) *cobra.Command {
	var force, asJSON bool
	c := &cobra.Command{
		Use:   "prune",
		Short: "Delete every VM that is not running",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && isTTY(e.stdin) {
				fmt.Fprint(e.stderr, "Delete all stopped, created and failed VMs? [y/N] ")
				var answer string
				_, _ = fmt.Fscanln(e.stdin, &answer)
				if !strings.EqualFold(answer, "y") && !strings.EqualFold(answer, "yes") {
					return nil
				}
			}
			var res api.PruneResult
			if err := e.call(cmd.Context(), http.MethodPost, "/v1/vms/prune", nil, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, res)
			}
			sort.Strings(res.Deleted)
			for _, n := range res.Deleted {
				fmt.Fprintln(e.stdout, n)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
