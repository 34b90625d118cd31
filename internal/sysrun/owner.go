package sysrun

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/errdefs"
	"banger/internal/installmeta"
	"banger/internal/version"
)

// DefaultPath is the PATH bangerd gets when the supervisor has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Owner is the resolved account bangerd runs as.
type Owner struct {
	User   string
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, primary included when listed
	Home   string
}

// LookupOwner resolves name (a user name, or a numeric uid) to an Owner
// and refuses root.
func LookupOwner(name string) (Owner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var uerr error
		if u, uerr = user.LookupId(name); uerr != nil {
			return Owner{}, errdefs.Invalid("look up owner %q: %v", name, err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return Owner{}, fmt.Errorf("parse uid of %s: %w", u.Username, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return Owner{}, fmt.Errorf("parse gid of %s: %w", u.Username, err)
	}
	if uid == 0 {
		return Owner{}, errdefs.Invalid("owner %q is root: the owner must be a normal user (bangerd holds no privilege)", u.Username)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return Owner{}, fmt.Errorf("list groups of %s: %w", u.Username, err)
	}
	groups := make([]uint32, 0, len(ids))
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return Owner{}, fmt.Errorf("parse group id %q of %s: %w", id, u.Username, err)
		}
		groups = append(groups, uint32(g))
	}
	slices.Sort(groups)
	return Owner{
		User: u.Username, UID: uint32(uid), GID: uint32(gid),
		Groups: slices.Compact(groups), Home: filepath.Clean(u.HomeDir),
	}, nil
}

// Metadata is the install metadata naming o, stamped with this build and
// now.
func Metadata(o Owner, now time.Time) installmeta.Meta {
	return installmeta.Meta{
		OwnerUser: o.User, OwnerUID: int(o.UID), OwnerGID: int(o.GID), OwnerHome: o.Home,
		Version: version.Version, Commit: version.Commit,
		InstalledAt: now.UTC().Truncate(time.Second),
	}
}

// OwnerEnv builds bangerd's environment from scratch (nothing of root's
// environment leaks through): HOME, USER, LOGNAME, PATH (pathVar, or
// DefaultPath when empty), XDG_RUNTIME_DIR only when runtimeDir is not ""
// (the caller passes it only when it exists and belongs to the owner; see
// RuntimeDirFor), and BANGER_HELPER_SOCKET.
func OwnerEnv(o Owner, pathVar, runtimeDir, helperSocket string) map[string]string {
	if pathVar == "" {
		pathVar = DefaultPath
	}
	env := map[string]string{
		"HOME":                 o.Home,
		"USER":                 o.User,
		"LOGNAME":              o.User,
		"PATH":                 pathVar,
		"BANGER_HELPER_SOCKET": helperSocket,
	}
	if runtimeDir != "" {
		env["XDG_RUNTIME_DIR"] = runtimeDir
	}
	return env
}

// EnvList renders env as sorted KEY=VALUE entries for exec.
func EnvList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// RuntimeDirFor returns /run/user/<uid> when it is a directory owned by
// uid and not writable by others, else "" (bangerd then falls back to
// /tmp/banger-<uid>).
func RuntimeDirFor(uid uint32) string {
	dir := "/run/user/" + strconv.FormatUint(uint64(uid), 10)
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != uid {
		return ""
	}
	return dir
}

// checkHome refuses an owner whose home is not an existing directory:
// bangerd keeps its state there.
func checkHome(o Owner) error {
	fi, err := os.Stat(o.Home)
	if err != nil || !fi.IsDir() {
		return errdefs.Invalid("owner %s has no home directory %s: create it, owned by the owner", o.User, o.Home)
	}
	return nil
}

// validName reports whether s is usable as a user name argument.
func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/:\x00\n") && !strings.HasPrefix(s, "-")
}
