package image

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/execx"
)

// debootstrapPackages is what a banger dev VM needs on top of minbase:
// systemd as init, a compiler toolchain, git and TLS-capable curl.
var debootstrapPackages = []string{
	"systemd", "systemd-sysv", "udev", "dbus", "git", "make", "gcc", "libc6-dev",
	"curl", "ca-certificates", "iproute2", "procps", "less", "bash-completion",
}

// maskedUnits slow a microVM boot or fail without hardware it lacks. The
// serial console getty stays: it is the only login a VM without ssh has.
var maskedUnits = []string{
	"systemd-timesyncd.service", // the host keeps the clock; no NTP egress
	"apt-daily.timer", "apt-daily.service",
	"apt-daily-upgrade.timer", "apt-daily-upgrade.service",
	"e2scrub_all.timer", "e2scrub_all.service", "e2scrub_reap.service",
	"fstrim.timer", "man-db.timer", "dpkg-db-backup.timer",
	"getty@tty1.service",        // no VGA console on a microVM
	"systemd-firstboot.service", // would prompt on the console
	"systemd-networkd-wait-online.service",
}

// BuildDebootstrap builds a Debian (or Ubuntu) image for suite (e.g.
// "bookworm") at out with debootstrap, configured for a fast microVM boot.
// It needs root (debootstrap chroots and creates device nodes) and network
// access to the mirror, and takes minutes. Every package is verified: the
// suite must be in the allow-list (Suites) with its archive keyring
// installed, and debootstrap is made to check the Release signature against
// that keyring whatever mirror opts names. Mirror empty means the suite's
// default, over https when the host can check certificates.
func BuildDebootstrap(ctx context.Context, suite, out string, opts BuildOptions) (*Result, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("build debootstrap image: needs root (debootstrap chroots into the new tree)")
	}
	src, err := lookupSuite(suite)
	if err != nil {
		return nil, err
	}
	keyring, err := checkKeyring(suite, src)
	if err != nil {
		return nil, err
	}
	mirror := opts.Mirror
	if mirror == "" {
		mirror = defaultMirror(src, hostHTTPS())
	}
	if err := validMirror(mirror); err != nil {
		return nil, err
	}
	bin, err := execx.LookPath("debootstrap")
	if err != nil {
		return nil, err
	}
	return withStaging(out, &opts, func(s *stager) (*Result, error) {
		// debootstrap's tree is the image root; MkdirTemp made it 0700.
		if err := os.Chmod(s.root, 0o755); err != nil {
			return nil, fmt.Errorf("chmod staging root: %w", err)
		}
		opts.progress("debootstrap %s from %s, checked against %s (takes a few minutes)", suite, mirror, keyring)
		start := time.Now()
		if out, err := execx.Default.Run(ctx, bin, debootstrapArgs(suite, src, keyring, s.root, mirror, debootstrapPackages)...); err != nil {
			if why := debootstrapFailure(out); why != "" {
				return nil, fmt.Errorf("debootstrap %s from %s: %s: %w", suite, mirror, why, err)
			}
			return nil, fmt.Errorf("debootstrap %s from %s: %w", suite, mirror, err)
		}
		opts.progress("debootstrap finished in %s", time.Since(start).Round(time.Second))
		opts.progress("configuring for a microVM")
		if err := configureDebian(s.root, opts.hostname()); err != nil {
			return nil, err
		}
		opts.progress("recording the tree")
		if err := s.adopt(ctx); err != nil {
			return nil, err
		}
		return buildExt4(ctx, s, out, &opts)
	})
}

// Debootstrapper is the root helper's image builder (helper.ImageBuilder):
// the suite's keyring is root's choice from the allow-list; the request
// gives only the suite and, optionally, a mirror.
type Debootstrapper struct{}

// CheckSuite refuses a suite whose packages this host cannot verify.
func (Debootstrapper) CheckSuite(suite string) error {
	_, err := CheckSuite(suite)
	return err
}

// BuildDebootstrap builds suite's image at out, staging in workDir.
func (Debootstrapper) BuildDebootstrap(ctx context.Context, suite, mirror, out, workDir string) error {
	_, err := BuildDebootstrap(ctx, suite, out, BuildOptions{WorkDir: workDir, Mirror: mirror})
	return err
}

func configureDebian(root, hostname string) error {
	files := []struct {
		rel  string
		mode os.FileMode
		body string
	}{
		{"etc/hostname", 0o644, hostname + "\n"},
		{"etc/hosts", 0o644, "127.0.0.1\tlocalhost\n127.0.1.1\t" + hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		// Root comes from the kernel command line and banger's init
		// mounts /root and /run itself: nothing for systemd to mount.
		{"etc/fstab", 0o644, "# banger: the root filesystem and /root are mounted by banger's initramfs.\n"},
		// Empty: each VM gets its own machine ID at boot, not a shared one.
		{"etc/machine-id", 0o444, ""},
	}
	for _, f := range files {
		if err := replaceInTree(root, f.rel, func(p string) error {
			return os.WriteFile(p, []byte(f.body), f.mode)
		}); err != nil {
			return err
		}
	}
	// debootstrap copies the build host's resolver config; it is wrong
	// inside a VM. The guest agent writes the VM's own.
	if err := removeInTree(root, "etc/resolv.conf"); err != nil {
		return err
	}
	for _, u := range maskedUnits {
		if err := replaceInTree(root, path.Join("etc/systemd/system", u), func(p string) error {
			return os.Symlink("/dev/null", p)
		}); err != nil {
			return fmt.Errorf("mask %s: %w", u, err)
		}
	}
	// apt caches are large and stale by the time a VM boots.
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"} {
		matches, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			return fmt.Errorf("clear apt caches: %w", err)
		}
		for _, m := range matches {
			rel, _ := filepath.Rel(root, m)
			if err := removeInTree(root, filepath.ToSlash(rel)); err != nil {
				return err
			}
		}
	}
	return nil
}

// safeParent returns the host path of rel's parent inside root after
// checking that no component of it is a symlink: a tree produced by a
// package manager is trusted less than banger's own writes into it.
func safeParent(root, rel string) (string, error) {
	p := root
	for _, c := range strings.Split(path.Dir(rel), "/") {
		if c == "." {
			continue
		}
		p = filepath.Join(p, c)
		st, err := os.Lstat(p)
		if os.IsNotExist(err) {
			if err := os.Mkdir(p, 0o755); err != nil {
				return "", fmt.Errorf("create %s: %w", c, err)
			}
			continue
		}
		if err != nil {
			return "", fmt.Errorf("check %s: %w", rel, err)
		}
		if !st.IsDir() {
			return "", fmt.Errorf("write %s: %s is not a directory", rel, c)
		}
	}
	return p, nil
}

func removeInTree(root, rel string) error {
	dir, err := safeParent(root, rel)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, path.Base(rel))); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	return nil
}

func replaceInTree(root, rel string, create func(string) error) error {
	if err := removeInTree(root, rel); err != nil {
		return err
	}
	dir, _ := safeParent(root, rel)
	if err := create(filepath.Join(dir, path.Base(rel))); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	return nil
}
