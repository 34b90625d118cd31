package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/sizes"
	"banger/internal/textsafe"
	"banger/internal/workspace"
)

// maxGuestMessage bounds the guest output the CLI keeps to quote in a
// message.
const maxGuestMessage = 8 << 10

// prepareWorkspace runs the preflight, mapping bad input to a usage error.
func prepareWorkspace(ctx context.Context, path string, o workspace.Options) (*workspace.Workspace, error) {
	w, err := workspace.Prepare(ctx, path, o)
	var inv workspace.InvalidError
	if errors.As(err, &inv) {
		return nil, usageError{inv}
	}
	return w, err
}

// workspaceFlags are the flags vm run and vm workspace prepare share.
type workspaceFlags struct {
	opts   workspace.Options
	dryRun bool
}

func (f *workspaceFlags) register(c *cobra.Command) {
	c.Flags().BoolVar(&f.opts.Untracked, "include-untracked", false, "also copy untracked files git does not ignore")
	c.Flags().BoolVar(&f.dryRun, "dry-run", false, "list the workspace files and copy nothing")
	c.Flags().StringVar(&f.opts.Branch, "branch", "", "create and check out this branch in the guest repository")
	c.Flags().StringVar(&f.opts.From, "from", "", "with --branch: start the branch at this commit and copy its tree instead of the work tree")
}

func (f *workspaceFlags) used() bool {
	return f.dryRun || f.opts.Untracked || f.opts.Branch != "" || f.opts.From != ""
}

func (e *env) listWorkspace(w *workspace.Workspace) {
	for _, f := range w.Files {
		fmt.Fprintln(e.stdout, f)
	}
}

// copyWorkspace streams the workspace tarball into the guest, where sh and
// tar unpack it, then records the workspace on the VM. A re-sync refuses to
// replace a guest repository that has moved past the recorded commit
// unless force is set.
func (e *env) copyWorkspace(ctx context.Context, vm string, w *workspace.Workspace, force bool) error {
	var prev api.VM
	if err := e.call(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(vm), nil, &prev); err != nil {
		return err
	}
	prevBase := ""
	if prev.Workspace == w.GuestDir() {
		prevBase = prev.WorkspaceBase
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(w.WriteTar(ctx, pw)) }()
	defer pr.Close()
	// The sync script prints a commit on refusal and tar its errors.
	stdout, stderr := newGuestOutput(maxGuestMessage), newGuestOutput(maxGuestMessage)
	sub := &env{stdin: pr, stdout: stdout, stderr: stderr, layout: e.layout, cl: e.cl}
	code, err := sub.execWith(ctx, vm, api.ExecRequest{Argv: workspace.SyncArgv(w.GuestDir(), prevBase, force), Cwd: "/"}, false)
	if err != nil {
		return fmt.Errorf("copy workspace: %w", err)
	}
	if err := workspace.SyncError(vm, w.GuestDir(), prevBase, code, stdout.String()); err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("copy workspace into %s: exited %d: %s", w.GuestDir(), code, textsafe.Line(strings.TrimSpace(stderr.String())))
	}
	req := api.WorkspaceRequest{HostPath: w.Top, GuestDir: w.GuestDir(), Head: w.Base}
	return e.call(ctx, http.MethodPut, "/v1/vms/"+url.PathEscape(vm)+"/workspace", req, nil)
}

func newVMWorkspaceCommand(e *env) *cobra.Command {
	c := &cobra.Command{Use: "workspace", Short: "Copy a git work tree into a VM, or export what changed there"}
	var wf workspaceFlags
	var force bool
	prepare := &cobra.Command{
		Use:   "prepare NAME [PATH]",
		Short: "Copy (or re-sync) a git work tree into a running VM; vm exec then runs there",
		Long: "Copy PATH's tracked files (default: the current directory) to /root/<repo> in the VM, with a\n" +
			"git repository at the host's commit, so the guest can commit and 'vm workspace export' can\n" +
			"bring the changes back. Re-syncing refuses to replace guest commits unless --force is given.",
		Args:              minArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 2 {
				return usageError{fmt.Errorf("unexpected argument %q", args[2])}
			}
			path := "."
			if len(args) == 2 {
				path = args[1]
			}
			w, err := prepareWorkspace(cmd.Context(), path, wf.opts)
			if err != nil {
				return err
			}
			defer w.Close()
			if wf.dryRun {
				e.listWorkspace(w)
				return nil
			}
			if err := e.copyWorkspace(cmd.Context(), args[0], w, force); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: %d files in %s at %s\n", args[0], len(w.Files), w.GuestDir(), w.Base[:12])
			return nil
		},
	}
	wf.register(prepare)
	prepare.Flags().BoolVar(&force, "force", false, "replace the guest repository even if it has commits the host has not seen")

	var base, output, maxSize string
	export := &cobra.Command{
		Use:   "export NAME [-o FILE]",
		Short: "Write a patch of everything changed in the VM's workspace",
		Long: "Write a patch from the commit the workspace was copied at (or --base-commit) to the guest's\n" +
			"work tree: commits made in the guest, uncommitted changes and untracked files git does not\n" +
			"ignore. Apply it on the host with 'git apply'. The guest repository is not modified.",
		Args:              exactArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, err := sizes.Parse(maxSize)
			if err != nil {
				return usageError{fmt.Errorf("--max-size: %w", err)}
			}
			return e.exportWorkspace(cmd.Context(), args[0], base, output, limit)
		},
	}
	export.Flags().StringVar(&base, "base-commit", "", "diff against this commit instead of the one the workspace was copied at")
	export.Flags().StringVarP(&output, "output", "o", "", "write the patch to FILE instead of stdout")
	export.Flags().StringVar(&maxSize, "max-size", sizes.Format(defaultExportMax), "refuse a patch larger than this")
	c.AddCommand(prepare, export)
	return c
}

func (e *env) exportWorkspace(ctx context.Context, vm, base, output string, maxSize int64) error {
	var v api.VM
	if err := e.call(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(vm), nil, &v); err != nil {
		return err
	}
	if v.Workspace == "" {
		return usageError{fmt.Errorf("%s has no workspace: copy one with 'banger vm run PATH' or 'banger vm workspace prepare %s PATH'", vm, vm)}
	}
	if base == "" {
		base = v.WorkspaceBase
	}
	if base == "" {
		return usageError{fmt.Errorf("%s's workspace has no recorded commit: give --base-commit", vm)}
	}
	rep, err := writeExport("export from "+vm, output, e.stdout, e.stderr, maxSize, func(stdout io.Writer, stderr *guestOutput) error {
		sub := &env{stdout: stdout, stderr: stderr, layout: e.layout, cl: e.cl}
		code, err := sub.execWith(ctx, vm, api.ExecRequest{Argv: workspace.ExportArgv(v.Workspace, base), Cwd: "/"}, false)
		if err != nil {
			return fmt.Errorf("export from %s: %w", vm, err)
		}
		return workspace.ExportError(vm, v.Workspace, base, code, stderr.String())
	})
	if err != nil {
		return err
	}
	if rep.Files == 0 {
		fmt.Fprintf(e.stderr, "banger: note: no changes in %s since %s\n", v.Workspace, base)
	}
	return nil
}
