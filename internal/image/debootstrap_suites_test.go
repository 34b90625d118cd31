package image

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSuiteAllowList(t *testing.T) {
	tests := []struct {
		suite         string
		keyring, pkg  string
		script, label string
	}{
		{"bullseye", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"bookworm", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"trixie", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"forky", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"sid", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"stable", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"testing", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"unstable", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"oldstable", DebianKeyring, "debian-archive-keyring", "sid", "deb.debian.org/debian"},
		{"jammy", UbuntuKeyring, "ubuntu-keyring", "gutsy", "archive.ubuntu.com/ubuntu"},
		{"noble", UbuntuKeyring, "ubuntu-keyring", "gutsy", "archive.ubuntu.com/ubuntu"},
	}
	for _, tc := range tests {
		src, err := lookupSuite(tc.suite)
		if err != nil {
			t.Errorf("lookupSuite(%q): %v", tc.suite, err)
			continue
		}
		if src.Keyring != tc.keyring || src.Package != tc.pkg || src.Script != tc.script || src.Mirror != tc.label {
			t.Errorf("lookupSuite(%q) = %+v, want keyring %s from %s, script %s, mirror %s", tc.suite, src, tc.keyring, tc.pkg, tc.script, tc.label)
		}
	}
	if got := Suites(); len(got) != len(tests) || !slices.IsSorted(got) {
		t.Errorf("Suites() = %v, want the %d above, sorted", got, len(tests))
	}
	for _, suite := range []string{"", "buster", "focal", "kali-rolling", "Bookworm", "bookworm-backports", "../bookworm", "bookworm/updates", "--no-check-gpg"} {
		_, err := lookupSuite(suite)
		if !errors.Is(err, ErrUnverifiable) || !strings.Contains(err.Error(), "bookworm, bullseye, forky") {
			t.Errorf("lookupSuite(%q) = %v, want it refused, listing the known suites", suite, err)
		}
	}
}

// TestCheckKeyring: only a keyring no user but root could have changed
// vouches for packages; a missing one names the package to install.
func TestCheckKeyring(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		// As root the temp dir would be root's: make it another user's.
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	owned := filepath.Join(dir, "owner.gpg")
	if err := os.WriteFile(owned, []byte("keys"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.gpg")
	if err := os.Symlink(DebianKeyring, link); err != nil {
		t.Fatal(err)
	}
	missing := suiteSource{Keyring: "/usr/share/keyrings/banger-test-absent-keyring.gpg", Package: "banger-test-keyring"}
	if _, err := checkKeyring("jammy", missing); !errors.Is(err, ErrUnverifiable) ||
		!strings.Contains(err.Error(), "suite jammy") || !strings.Contains(err.Error(), "install the banger-test-keyring package") {
		t.Errorf("missing keyring: %v, want it refused naming the suite and package", err)
	}
	for name, path := range map[string]string{"owner's file": owned, "owner's symlink": link, "relative": "keyring.gpg"} {
		if _, err := checkKeyring("bookworm", suiteSource{Keyring: path, Package: "p"}); !errors.Is(err, ErrUnverifiable) {
			t.Errorf("%s %s: %v, want it refused", name, path, err)
		}
	}
	if os.Geteuid() == 0 {
		// In root's own directory, the file itself decides.
		rootDir := t.TempDir()
		for name, set := range map[string]func(string) error{
			"group-writable": func(p string) error { return os.Chmod(p, 0o664) },
			"others'":        func(p string) error { return os.Chown(p, 65534, 65534) },
			"empty":          func(p string) error { return os.Truncate(p, 0) },
			"fine":           func(string) error { return nil },
		} {
			p := filepath.Join(rootDir, name+".gpg")
			if err := os.WriteFile(p, []byte("keys"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := set(p); err != nil {
				t.Fatal(err)
			}
			got, err := checkKeyring("bookworm", suiteSource{Keyring: p, Package: "p"})
			if name == "fine" {
				if err != nil || got != p {
					t.Errorf("root's 0644 keyring: %q, %v", got, err)
				}
			} else if !errors.Is(err, ErrUnverifiable) {
				t.Errorf("%s keyring: %v, want it refused", name, err)
			}
		}
	}
	if _, err := os.Stat(DebianKeyring); err != nil {
		t.Skipf("no Debian keyring on this host: %v", err)
	}
	got, err := CheckSuite("bookworm")
	if err != nil || got != DebianKeyring {
		t.Errorf("CheckSuite(bookworm) = %q, %v; want %s", got, err, DebianKeyring)
	}
}

func TestDefaultMirror(t *testing.T) {
	tests := []struct {
		src   suiteSource
		https bool
		want  string
	}{
		{debianSource, true, "https://deb.debian.org/debian"},
		{debianSource, false, "http://deb.debian.org/debian"},
		{ubuntuSource, true, "https://archive.ubuntu.com/ubuntu"},
		{ubuntuSource, false, "http://archive.ubuntu.com/ubuntu"},
	}
	for _, tc := range tests {
		if got := defaultMirror(tc.src, tc.https); got != tc.want {
			t.Errorf("defaultMirror(%s, https=%v) = %s, want %s", tc.src.Mirror, tc.https, got, tc.want)
		}
	}
}

func TestValidMirror(t *testing.T) {
	for _, m := range []string{"http://127.0.0.1:8000/", "https://deb.debian.org/debian", "http://[::1]:3142/debian", "http://mirror"} {
		if err := validMirror(m); err != nil {
			t.Errorf("validMirror(%q) = %v", m, err)
		}
	}
	for _, m := range []string{
		"", "file:///srv/mirror", "ftp://deb.debian.org/debian", "/srv/mirror", "--keyring=/x", "http://", "https:///debian",
		"http://u:p@deb.debian.org/debian", "http://deb.debian.org/deb ian", "http://deb.debian.org/\ndebian",
		"http://deb.debian.org/\x7f", "HTTP://deb.debian.org/debian", "http://deb.debian.org/" + strings.Repeat("a", 500),
	} {
		if err := validMirror(m); err == nil {
			t.Errorf("validMirror(%q) accepted it", m)
		}
	}
}

// TestDebootstrapArgs: every run names root's keyring and forces the
// check, and nothing the owner gives lands among the options.
func TestDebootstrapArgs(t *testing.T) {
	tests := []struct {
		suite   string
		src     suiteSource
		keyring string
		mirror  string
		tail    []string
	}{
		{"bookworm", debianSource, DebianKeyring, "https://deb.debian.org/debian",
			[]string{"bookworm", "/s/root", "https://deb.debian.org/debian", "sid"}},
		{"noble", ubuntuSource, UbuntuKeyring, "http://127.0.0.1:8000/",
			[]string{"noble", "/s/root", "http://127.0.0.1:8000/", "gutsy"}},
	}
	for _, tc := range tests {
		args := debootstrapArgs(tc.suite, tc.src, tc.keyring, "/s/root", tc.mirror, []string{"systemd", "git"})
		opts, tail := args[:len(args)-4], args[len(args)-4:]
		if !slices.Equal(tail, tc.tail) {
			t.Errorf("%s: positional args %q, want %q", tc.suite, tail, tc.tail)
		}
		want := []string{"--variant=minbase", "--include=systemd,git", "--keyring=" + tc.keyring, "--force-check-gpg"}
		if !slices.Equal(opts, want) {
			t.Errorf("%s: options %q, want %q", tc.suite, opts, want)
		}
	}
}

func TestDebootstrapFailure(t *testing.T) {
	tests := []struct {
		name, stdout, want string
	}{
		{"none", "I: Retrieving InRelease\nI: Checking Release signature\n", ""},
		{"unsigned", "I: Retrieving InRelease \nI: Retrieving Release \nI: Retrieving Release.gpg \nE: Failed getting release signature file http://127.0.0.1:1/debian/dists/bookworm/Release.gpg\n",
			"E: Failed getting release signature file http://127.0.0.1:1/debian/dists/bookworm/Release.gpg"},
		{"unknown key, continued", "I: Checking Release signature\nE: Release signed by unknown key (key id ABCD)\n   The specified keyring /k.gpg may be incorrect or out of date.\n   You can find the latest Debian release key at https://ftp-master.debian.org/keys.html\nI: after\n",
			"E: Release signed by unknown key (key id ABCD) The specified keyring /k.gpg may be incorrect or out of date. You can find the latest Debian release key at https://ftp-master.debian.org/keys.html"},
		{"warning and error", "W: Cannot check Release signature; keyring file not available /x.gpg\nE: Keyring-based check was requested; aborting accordingly\n",
			"W: Cannot check Release signature; keyring file not available /x.gpg; E: Keyring-based check was requested; aborting accordingly"},
		{"escapes dropped", "E: bad \x1b]0;owned\x07mirror \u00e9\n", "E: bad ]0;ownedmirror"},
		{"bounded", "E: " + strings.Repeat("x", 3000) + "\n", "..." + strings.Repeat("x", 1000)},
	}
	for _, tc := range tests {
		if got := debootstrapFailure([]byte(tc.stdout)); got != tc.want {
			t.Errorf("%s: debootstrapFailure = %q, want %q", tc.name, got, tc.want)
		}
	}
}
