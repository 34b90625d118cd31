package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// workspace is a git work tree to copy into a VM.
type workspace struct {
	Top   string   // the repository's top-level directory on the host
	Name  string   // its base name: the guest directory is /root/<Name>
	Files []string // paths relative to Top, sorted
}

// GuestDir is where the workspace lands in the guest.
func (w *workspace) GuestDir() string { return "/root/" + w.Name }

// gitOut runs git with argv (never a shell) and returns its stdout.
func gitOut(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// prepareWorkspace is the preflight: before any VM exists, path must be a
// non-bare git work tree without submodules. It lists the tracked files,
// and with untracked also the untracked files git does not ignore. Ignored
// files never go in.
func prepareWorkspace(path string, untracked bool) (*workspace, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, usageError{errors.New("a workspace needs git on the host")}
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("workspace %s: %w", path, err)}
	}
	if !st.IsDir() {
		return nil, usageError{fmt.Errorf("workspace %s: not a directory", path)}
	}
	if out, err := gitOut(path, "rev-parse", "--is-bare-repository"); err != nil {
		return nil, usageError{fmt.Errorf("workspace %s: not a git repository", path)}
	} else if strings.TrimSpace(string(out)) == "true" {
		return nil, usageError{fmt.Errorf("workspace %s: a bare repository has no work tree", path)}
	}
	out, err := gitOut(path, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, usageError{fmt.Errorf("workspace %s: not inside a work tree", path)}
	}
	top := strings.TrimSpace(string(out))
	if sub, err := gitOut(top, "submodule", "status"); err == nil && len(bytes.TrimSpace(sub)) > 0 {
		return nil, usageError{fmt.Errorf("workspace %s: has submodules, which are not supported yet", top)}
	}
	args := []string{"ls-files", "-z", "--cached"}
	if untracked {
		args = append(args, "--others", "--exclude-standard")
	}
	list, err := gitOut(top, args...)
	if err != nil {
		return nil, err
	}
	w := &workspace{Top: top, Name: filepath.Base(top)}
	seen := map[string]bool{}
	for _, f := range strings.Split(string(list), "\x00") {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		// A tracked file deleted in the work tree is simply not copied.
		if _, err := os.Lstat(filepath.Join(top, f)); err != nil {
			continue
		}
		w.Files = append(w.Files, f)
	}
	sort.Strings(w.Files)
	return w, nil
}

// tarball packs the workspace files (modes, symlinks as symlinks).
func (w *workspace) tarball() (*bytes.Buffer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range w.Files {
		p := filepath.Join(w.Top, f)
		st, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		link := ""
		if st.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil, err
			}
		}
		hdr, err := tar.FileInfoHeader(st, link)
		if err != nil {
			return nil, err
		}
		hdr.Name = f
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if st.Mode().IsRegular() {
			fh, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, fh)
			fh.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &buf, nil
}

// copyWorkspace unpacks the workspace into the guest with the guest's tar,
// streamed over an exec session.
func (e *env) copyWorkspace(ctx context.Context, vm string, w *workspace) error {
	tb, err := w.tarball()
	if err != nil {
		return fmt.Errorf("pack workspace: %w", err)
	}
	dir := w.GuestDir()
	var stderr bytes.Buffer
	sub := &env{stdin: tb, stdout: io.Discard, stderr: &stderr, layout: e.layout, cl: e.cl}
	code, err := sub.execWith(ctx, vm, api.ExecRequest{Argv: []string{"sh", "-c", `mkdir -p "$1" && tar -x -f - -C "$1"`, "sh", dir}, Cwd: "/"}, false)
	if err != nil {
		return fmt.Errorf("copy workspace: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("copy workspace into %s: tar exited %d: %s", dir, code, strings.TrimSpace(stderr.String()))
	}
	head := ""
	if out, err := gitOut(w.Top, "rev-parse", "HEAD"); err == nil {
		head = strings.TrimSpace(string(out))
	}
	req := api.WorkspaceRequest{HostPath: w.Top, GuestDir: dir, Head: head}
	return e.call(ctx, http.MethodPut, "/v1/vms/"+url.PathEscape(vm)+"/workspace", req, nil)
}

func newVMWorkspaceCommand(e *env) *cobra.Command {
	c := &cobra.Command{Use: "workspace", Short: "Copy a git work tree into a VM"}
	var untracked bool
	prepare := &cobra.Command{
		Use:               "prepare NAME [PATH]",
		Short:             "Copy (or re-sync) a git work tree into a running VM; vm exec then runs there",
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
			w, err := prepareWorkspace(path, untracked)
			if err != nil {
				return err
			}
			if err := e.copyWorkspace(cmd.Context(), args[0], w); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: %d files in %s\n", args[0], len(w.Files), w.GuestDir())
			return nil
		},
	}
	prepare.Flags().BoolVar(&untracked, "include-untracked", false, "also copy untracked files git does not ignore")
	c.AddCommand(prepare)
	return c
}
