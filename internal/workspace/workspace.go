// Package workspace owns the host side of copying a git work tree into a
// VM: the preflight (before any VM exists), the file list, and the tarball
// the guest unpacks. The tarball carries the files plus a one-commit .git
// whose HEAD is the host's commit, so the guest can commit, branch and
// later export a patch against that commit without the host's history,
// remotes or hooks ever entering the VM. It also owns the guest-side
// scripts for re-syncing and exporting.
package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Options select what goes into the guest.
type Options struct {
	// Untracked adds untracked files git does not ignore.
	Untracked bool
	// Branch is a guest branch to create and check out at the base commit.
	Branch string
	// From is a commit-ish whose tree is copied instead of the work tree.
	// It needs Branch.
	From string
}

// Workspace is a git work tree ready to copy into a VM.
type Workspace struct {
	Top    string   // the repository's top-level directory on the host
	Name   string   // its base name: the guest directory is /root/<Name>
	Files  []string // paths relative to the file source, sorted
	Base   string   // the commit the guest repository starts at
	Branch string   // the branch checked out in the guest; "" = detached

	from bool   // Files come from the base commit, not the work tree
	tmp  string // scratch directory for the guest repository
	user [2]string
}

// InvalidError marks a problem with the user's input (path, flags), as
// opposed to a failure running git.
type InvalidError struct{ Err error }

func (e InvalidError) Error() string { return e.Err.Error() }
func (e InvalidError) Unwrap() error { return e.Err }

func invalid(format string, a ...any) error { return InvalidError{fmt.Errorf(format, a...)} }

// GuestDir is where the workspace lands in the guest.
func (w *Workspace) GuestDir() string { return "/root/" + w.Name }

// git runs git in dir with argv (never a shell) and returns its stdout.
func git(ctx context.Context, dir string, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "GIT_TERMINAL_PROMPT=0")
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func gitLine(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := git(ctx, dir, nil, args...)
	return strings.TrimSpace(string(out)), err
}

// Prepare is the preflight: path must be a non-bare git work tree without
// submodules, the flags must make sense, and --from must name a commit. It
// lists the files that will be copied but writes nothing; call Close when
// done with the workspace.
func Prepare(ctx context.Context, path string, o Options) (*Workspace, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, invalid("a workspace needs git on the host")
	}
	if o.From != "" && o.Branch == "" {
		return nil, invalid("--from needs --branch: name the guest branch to start at %s", o.From)
	}
	if o.From != "" && o.Untracked {
		return nil, invalid("--include-untracked copies from the work tree, --from from a commit: give one of them")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, invalid("workspace %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, invalid("workspace %s: not a directory", path)
	}
	if bare, err := gitLine(ctx, path, "rev-parse", "--is-bare-repository"); err != nil {
		return nil, invalid("workspace %s: not a git repository", path)
	} else if bare == "true" {
		return nil, invalid("workspace %s: a bare repository has no work tree", path)
	}
	top, err := gitLine(ctx, path, "rev-parse", "--show-toplevel")
	if err != nil || top == "" {
		return nil, invalid("workspace %s: not inside a work tree", path)
	}
	if o.Branch != "" {
		if _, err := gitLine(ctx, top, "check-ref-format", "--branch", o.Branch); err != nil {
			return nil, invalid("--branch %q: not a valid branch name", o.Branch)
		}
	}
	w := &Workspace{Top: top, Name: filepath.Base(top), Branch: o.Branch, from: o.From != ""}
	rev := "HEAD"
	if o.From != "" {
		rev = o.From
	}
	if w.Base, err = gitLine(ctx, top, "rev-parse", "--verify", "--quiet", rev+"^{commit}"); err != nil {
		if o.From != "" {
			return nil, invalid("--from %q: not a commit in %s", o.From, top)
		}
		return nil, invalid("workspace %s: has no commit yet; commit something first", top)
	}
	if w.Branch == "" {
		// Keep the host's branch name, or a detached HEAD.
		w.Branch, _ = gitLine(ctx, top, "symbolic-ref", "--quiet", "--short", "HEAD")
	}
	for i, k := range []string{"user.name", "user.email"} {
		w.user[i], _ = gitLine(ctx, top, "config", k)
	}
	if o.From != "" {
		err = w.listTree(ctx)
	} else {
		err = w.listWorkTree(ctx, o.Untracked)
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

// listWorkTree lists the tracked files present in the work tree, plus the
// untracked, not-ignored ones when asked. Ignored files never go in.
func (w *Workspace) listWorkTree(ctx context.Context, untracked bool) error {
	staged, err := git(ctx, w.Top, nil, "ls-files", "-z", "--stage")
	if err != nil {
		return err
	}
	var files []string
	for _, rec := range strings.Split(string(staged), "\x00") {
		meta, name, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		if strings.HasPrefix(meta, "160000 ") {
			return invalid("workspace %s: %s is a submodule, which is not supported yet", w.Top, name)
		}
		files = append(files, name)
	}
	if untracked {
		others, err := git(ctx, w.Top, nil, "ls-files", "-z", "--others", "--exclude-standard")
		if err != nil {
			return err
		}
		files = append(files, strings.Split(string(others), "\x00")...)
	}
	seen := map[string]bool{}
	for _, f := range files {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		// A tracked file deleted in the work tree is simply not copied.
		if _, err := os.Lstat(filepath.Join(w.Top, f)); err != nil {
			continue
		}
		w.Files = append(w.Files, f)
	}
	sort.Strings(w.Files)
	return nil
}

// listTree lists the files of the base commit's tree.
func (w *Workspace) listTree(ctx context.Context) error {
	out, err := git(ctx, w.Top, nil, "ls-tree", "-r", "-z", "--full-tree", w.Base)
	if err != nil {
		return err
	}
	for _, rec := range strings.Split(string(out), "\x00") {
		meta, name, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		if strings.HasPrefix(meta, "160000 ") {
			return invalid("workspace %s: %s is a submodule at %s, which is not supported yet", w.Top, name, short(w.Base))
		}
		w.Files = append(w.Files, name)
	}
	sort.Strings(w.Files)
	return nil
}

// Close removes the scratch directory.
func (w *Workspace) Close() error {
	if w.tmp == "" {
		return nil
	}
	err := os.RemoveAll(w.tmp)
	w.tmp = ""
	return err
}

// buildGitDir creates, in a scratch directory, the repository the guest
// gets: the base commit and its tree only (a shallow repository, so the
// commit keeps its id), the branch checked out, an index matching the base
// commit, and the host's user.name and user.email so the guest can commit.
// Nothing else of the host repository's configuration goes in.
func (w *Workspace) buildGitDir(ctx context.Context) (string, error) {
	tmp, err := os.MkdirTemp("", "banger-workspace-")
	if err != nil {
		return "", fmt.Errorf("create scratch dir: %w", err)
	}
	w.tmp = tmp
	repo := filepath.Join(tmp, "repo")
	if _, err := git(ctx, tmp, nil, "init", "--quiet", "--template=", repo); err != nil {
		return "", err
	}
	objs, err := git(ctx, w.Top, nil, "rev-list", "--objects", "--no-walk", w.Base)
	if err != nil {
		return "", err
	}
	pack, err := git(ctx, w.Top, bytes.NewReader(objs), "pack-objects", "--stdout", "--quiet")
	if err != nil {
		return "", err
	}
	if _, err := git(ctx, repo, bytes.NewReader(pack), "index-pack", "--stdin"); err != nil {
		return "", err
	}
	gitDir := filepath.Join(repo, ".git")
	if err := os.WriteFile(filepath.Join(gitDir, "shallow"), []byte(w.Base+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("mark shallow: %w", err)
	}
	steps := [][]string{{"update-ref", "--no-deref", "HEAD", w.Base}}
	if w.Branch != "" {
		steps = [][]string{
			{"update-ref", "refs/heads/" + w.Branch, w.Base},
			{"symbolic-ref", "HEAD", "refs/heads/" + w.Branch},
		}
	}
	steps = append(steps, []string{"read-tree", w.Base})
	for i, k := range []string{"user.name", "user.email"} {
		if w.user[i] != "" {
			steps = append(steps, []string{"config", k, w.user[i]})
		}
	}
	for _, s := range steps {
		if _, err := git(ctx, repo, nil, s...); err != nil {
			return "", err
		}
	}
	return repo, nil
}

// WriteTar writes the tarball the guest unpacks into GuestDir: the files
// (modes kept, symlinks as symlinks, owned by root) and the .git.
func (w *Workspace) WriteTar(ctx context.Context, out io.Writer) error {
	repo, err := w.buildGitDir(ctx)
	if err != nil {
		return fmt.Errorf("build the guest repository: %w", err)
	}
	src := w.Top
	if w.from {
		// The files are the base commit's, checked out next to its .git.
		if _, err := git(ctx, repo, nil, "checkout-index", "--all", "--force"); err != nil {
			return err
		}
		src = repo
	}
	tw := tar.NewWriter(out)
	for _, f := range w.Files {
		if err := addFile(tw, filepath.Join(src, f), f); err != nil {
			return fmt.Errorf("pack %s: %w", f, err)
		}
	}
	gitDir := filepath.Join(repo, ".git")
	err = filepath.WalkDir(gitDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repo, p)
		if err != nil {
			return err
		}
		return addFile(tw, p, filepath.ToSlash(rel))
	})
	if err != nil {
		return fmt.Errorf("pack .git: %w", err)
	}
	return tw.Close()
}

func addFile(tw *tar.Writer, p, name string) error {
	st, err := os.Lstat(p)
	if err != nil {
		return err
	}
	link := ""
	if st.Mode()&os.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(st, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if st.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return nil
	}
	fh, err := os.Open(p)
	if err != nil {
		return err
	}
	defer fh.Close()
	_, err = io.Copy(tw, fh)
	return err
}

// ErrNoGit is reported by the guest scripts when the image has no git.
var ErrNoGit = errors.New("the guest image has no git")
