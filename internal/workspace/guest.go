package workspace

import (
	"fmt"
	"strings"

	"banger/internal/textsafe"
)

// The guest side runs through the agent's exec as argv: a fixed script for
// sh plus positional parameters, so no host value is ever parsed as shell.
// The scripts need only POSIX sh and tar (busybox will do); export needs git.

// Exit statuses the scripts use to report a refusal rather than a failure.
const (
	exitGuestAhead = 10 // sync: the guest repository moved past the recorded base
	exitNoGit      = 11 // export: no git in the guest
	exitNoRepo     = 12 // export: the directory is not a repository
	exitNoBase     = 13 // export: the base commit is not in the guest repository
)

const syncScript = `set -e
d=$1 base=$2 force=$3
if [ "$force" != 1 ] && [ -n "$base" ] && [ -e "$d/.git" ] && command -v git >/dev/null 2>&1; then
	h=$(git -C "$d" rev-parse -q --verify HEAD 2>/dev/null || true)
	if [ -n "$h" ] && [ "$h" != "$base" ]; then
		echo "$h"
		exit 10
	fi
fi
rm -rf "$d/.git"
mkdir -p "$d"
tar -x -f - -C "$d"
`

// SyncArgv unpacks the tarball from stdin into dir, replacing its .git.
// Unless force is set, it refuses (status 10, printing the guest HEAD)
// when the guest repository's HEAD is no longer prevBase, the commit
// recorded at the last copy: replacing .git would lose guest commits.
func SyncArgv(dir, prevBase string, force bool) []string {
	f := "0"
	if force {
		f = "1"
	}
	return []string{"sh", "-c", syncScript, "banger-sync", dir, prevBase, f}
}

// SyncError explains a sync refusal (exit status code, output out), or
// returns nil when the status is not a refusal.
func SyncError(vm, dir, prevBase string, code int, out string) error {
	if code != exitGuestAhead {
		return nil
	}
	return fmt.Errorf("the workspace %s in %s has moved on to %s since it was copied at %s; "+
		"export its changes first ('banger vm workspace export %s'), or pass --force to replace them",
		dir, vm, textsafe.Line(short(strings.TrimSpace(out))), short(prevBase), vm)
}

// exportScript prints a patch from base to everything in the guest work
// tree: commits since base, uncommitted changes and untracked files that
// are not ignored. It stages into a scratch index and a scratch object
// directory (the repository's objects as an alternate), so the guest
// repository, its index and its object store are left exactly as they were.
const exportScript = `set -e
cd "$1"
base=$2
shift 2
command -v git >/dev/null 2>&1 || exit 11
g=$(git rev-parse --absolute-git-dir 2>/dev/null) || exit 12
git rev-parse -q --verify "$base^{commit}" >/dev/null || exit 13
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
if [ -f "$g/index" ]; then cp "$g/index" "$t/index"; fi
mkdir "$t/objects"
export GIT_INDEX_FILE="$t/index" GIT_OBJECT_DIRECTORY="$t/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$g/objects"
git add -A
git -c core.quotePath=false diff --cached "$@" "$base"
`

// exportDiffFlags are the export's git diff flags. --no-renames: a rename
// or copy header names a file the patch does not show, whose mode (a
// symlink's, say) the host could not check; the checker (CheckPatch)
// refuses them, so git must not write them.
var exportDiffFlags = []string{"--binary", "--full-index", "--no-renames", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/"}

// ExportArgv prints, on stdout, the patch of dir's changes since base.
func ExportArgv(dir, base string) []string {
	return append([]string{"sh", "-c", exportScript, "banger-export", dir, base}, exportDiffFlags...)
}

// maxQuoted bounds how much of the guest's stderr an error quotes.
const maxQuoted = 2 << 10

// ExportError explains a non-zero export status. stderr is the guest's: it
// is quoted escaped, on one line, and at most maxQuoted bytes of it.
func ExportError(vm, dir, base string, code int, stderr string) error {
	switch code {
	case 0:
		return nil
	case exitNoGit:
		return fmt.Errorf("export from %s: %w; use an image with git (for example one built with --debootstrap)", vm, ErrNoGit)
	case exitNoRepo:
		return fmt.Errorf("export from %s: %s is not a git repository", vm, dir)
	case exitNoBase:
		return fmt.Errorf("export from %s: base commit %s is not in the guest repository, which holds %s's history only from the copied commit on",
			vm, base, dir)
	}
	msg := strings.TrimSpace(stderr)
	if len(msg) > maxQuoted {
		msg = fmt.Sprintf("%s ... (%d more bytes)", msg[:maxQuoted], len(msg)-maxQuoted)
	}
	return fmt.Errorf("export from %s: exited %d: %s", vm, code, textsafe.Line(msg))
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
