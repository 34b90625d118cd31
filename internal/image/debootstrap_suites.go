package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"banger/internal/trustpath"
)

// Archive keyrings root checks Release signatures against, and the Debian
// packages that install them.
const (
	DebianKeyring        = "/usr/share/keyrings/debian-archive-keyring.gpg"
	DebianKeyringPackage = "debian-archive-keyring"
	UbuntuKeyring        = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
	UbuntuKeyringPackage = "ubuntu-keyring"
)

// ErrUnverifiable marks a suite whose packages root cannot verify: not in
// the allow-list, or its keyring is missing or not root's alone.
var ErrUnverifiable = errors.New("cannot verify the suite's packages")

// suiteSource is root's choice for one suite the owner may ask for: which
// keyring vouches for its Release file, which debootstrap script knows how
// to install it (named, so that a suite newer than the host's debootstrap
// still works), and where it comes from by default.
type suiteSource struct {
	Keyring string
	Package string // installs Keyring
	Script  string // under debootstrap's scripts directory
	Mirror  string // default mirror, without the scheme
}

var (
	debianSource = suiteSource{Keyring: DebianKeyring, Package: DebianKeyringPackage, Script: "sid", Mirror: "deb.debian.org/debian"}
	ubuntuSource = suiteSource{Keyring: UbuntuKeyring, Package: UbuntuKeyringPackage, Script: "gutsy", Mirror: "archive.ubuntu.com/ubuntu"}
)

// suiteSources is the allow-list: a suite not named here is refused, so the
// owner can never pick a suite whose signatures nothing checks. Tests
// swap entries in; nothing else writes it.
var suiteSources = map[string]suiteSource{
	"bullseye":  debianSource,
	"bookworm":  debianSource,
	"trixie":    debianSource,
	"forky":     debianSource,
	"sid":       debianSource,
	"oldstable": debianSource,
	"stable":    debianSource,
	"testing":   debianSource,
	"unstable":  debianSource,
	"jammy":     ubuntuSource,
	"noble":     ubuntuSource,
}

// Suites lists the suites BuildDebootstrap accepts, sorted.
func Suites() []string {
	out := make([]string, 0, len(suiteSources))
	for s := range suiteSources {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// lookupSuite returns root's choice for suite, or an error listing the
// suites banger knows.
func lookupSuite(suite string) (suiteSource, error) {
	src, ok := suiteSources[suite]
	if !ok {
		return suiteSource{}, fmt.Errorf("suite %q: banger builds only suites whose archive keyring it knows (one of %s): %w",
			truncateName(suite), strings.Join(Suites(), ", "), ErrUnverifiable)
	}
	return src, nil
}

// CheckSuite says whether root can verify suite's packages on this host:
// the suite is in the allow-list and its keyring is installed and root's
// alone. It returns the keyring path debootstrap is to be given.
func CheckSuite(suite string) (keyring string, err error) {
	src, err := lookupSuite(suite)
	if err != nil {
		return "", err
	}
	return checkKeyring(suite, src)
}

// checkKeyring resolves src's keyring and checks that no user but root
// could have put its keys there: the keyring decides which packages root
// installs. A symlink is followed only through root's directories.
func checkKeyring(suite string, src suiteSource) (string, error) {
	missing := func(err error) error {
		return fmt.Errorf("suite %s: its archive keyring %s is not installed (install the %s package): %w: %w",
			suite, src.Keyring, src.Package, ErrUnverifiable, err)
	}
	if !filepath.IsAbs(src.Keyring) || filepath.Clean(src.Keyring) != src.Keyring {
		return "", fmt.Errorf("suite %s: keyring %q: want a clean absolute path: %w", suite, src.Keyring, ErrUnverifiable)
	}
	if err := trustpath.DirChain(filepath.Dir(src.Keyring), 0); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", missing(err)
		}
		return "", fmt.Errorf("suite %s: keyring %s: %w: %w", suite, src.Keyring, ErrUnverifiable, err)
	}
	resolved, err := filepath.EvalSymlinks(src.Keyring)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", missing(err)
		}
		return "", fmt.Errorf("suite %s: resolve keyring: %w", suite, err)
	}
	if err := trustpath.DirChain(filepath.Dir(resolved), 0); err != nil {
		return "", fmt.Errorf("suite %s: keyring %s: %w: %w", suite, resolved, ErrUnverifiable, err)
	}
	fi, err := os.Lstat(resolved)
	if err != nil {
		return "", fmt.Errorf("suite %s: check keyring: %w", suite, err)
	}
	switch {
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("not a regular file (%v)", fi.Mode().Type())
	case trustpath.Owner(fi) != 0:
		err = fmt.Errorf("owned by uid %d, not root", trustpath.Owner(fi))
	case fi.Mode().Perm()&0o022 != 0:
		err = fmt.Errorf("writable by group or others (mode %v)", fi.Mode().Perm())
	case fi.Size() == 0:
		err = errors.New("empty")
	}
	if err != nil {
		return "", fmt.Errorf("suite %s: keyring %s: %w: %w", suite, resolved, ErrUnverifiable, err)
	}
	return resolved, nil
}

// defaultMirror is src's mirror over https when the host can check the
// mirror's certificate, else over http: the Release signature protects the
// packages either way, https also hides what is fetched and stops a
// network attacker from serving stale but validly signed indices quietly.
func defaultMirror(src suiteSource, https bool) string {
	if https {
		return "https://" + src.Mirror
	}
	return "http://" + src.Mirror
}

// caBundle is where Debian's ca-certificates puts the bundle wget, which
// debootstrap fetches with, checks servers against.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// hostHTTPS says whether debootstrap can fetch over https here: wget
// verifies certificates against the system bundle, and without it every
// https fetch fails.
func hostHTTPS() bool {
	fi, err := os.Stat(caBundle)
	return err == nil && fi.Mode().IsRegular() && fi.Size() > 0
}

// validMirror checks an owner-chosen mirror: http or https only (no file
// or ftp URL root would read on the owner's behalf), with a host, and no
// byte that could end the argument early.
func validMirror(mirror string) error {
	if len(mirror) > 512 || strings.IndexFunc(mirror, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("debian mirror %q: want an http or https URL of at most 512 bytes without spaces", truncateName(mirror))
	}
	rest, ok := strings.CutPrefix(mirror, "https://")
	if !ok {
		rest, ok = strings.CutPrefix(mirror, "http://")
	}
	host, _, _ := strings.Cut(rest, "/")
	if !ok || host == "" || strings.Contains(host, "@") {
		return fmt.Errorf("debian mirror %q: want an http or https URL with a host and no user info", mirror)
	}
	return nil
}

// debootstrapArgs is debootstrap's argv after the binary. The keyring is
// always root's and the check is forced: with --keyring, debootstrap
// refuses a Release file it cannot verify; --force-check-gpg makes it
// refuse too if it ever ends up without a keyring (its own script would
// otherwise only warn when the owner gave a mirror).
func debootstrapArgs(suite string, src suiteSource, keyring, root, mirror string, include []string) []string {
	return []string{
		"--variant=minbase",
		"--include=" + strings.Join(include, ","),
		"--keyring=" + keyring,
		"--force-check-gpg",
		suite, root, mirror, src.Script,
	}
}

// debootstrapFailure picks debootstrap's errors and warnings out of its
// stdout, where it prints them: "E: Release signed by unknown key" says
// more than an exit status. Continuation lines are joined, anything but
// printable ASCII is dropped (a mirror chooses some of the words), and the
// result is bounded.
func debootstrapFailure(stdout []byte) string {
	var msgs []string
	keep := false
	for _, line := range strings.Split(string(stdout), "\n") {
		switch {
		case strings.HasPrefix(line, "E: "), strings.HasPrefix(line, "W: "):
			msgs = append(msgs, strings.TrimSpace(line))
			keep = true
		case keep && strings.HasPrefix(line, " ") && strings.TrimSpace(line) != "":
			msgs[len(msgs)-1] += " " + strings.TrimSpace(line)
		default:
			keep = false
		}
	}
	out := strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, strings.Join(msgs, "; "))
	out = strings.TrimSpace(out)
	const limit = 1000
	if len(out) > limit {
		out = "..." + out[len(out)-limit:]
	}
	return out
}

func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
