package e2e

import (
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"

	"golang.org/x/sys/unix"
)

// ownerCannotTouchJail checks, as the owner, that nothing of a running
// Firecracker VM's jail can be reached or kept: every path under the jail
// (listed as root), both by its host path and through the VMM's
// /proc/PID/root, can be neither stat'ed, opened, hard-linked or moved
// into the owner's home, nor, for a socket, connected to. A firecracker
// running as the owner's uid fails this at once: its /proc/PID/root is
// the owner's to walk.
func ownerCannotTouchJail(t *testing.T, owner *user.User, jailRoot string, pid int) {
	t.Helper()
	var rels []string
	if err := filepath.WalkDir(jailRoot, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(jailRoot, p)
		rels = append(rels, rel)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dev/kvm", "dev/net/tun", "root", "run/firecracker.socket", "v.sock"} {
		if !contains(rels, want) {
			t.Errorf("no %s in the jail to try (found %d paths)", want, len(rels))
		}
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	keep := owner.HomeDir
	tried := 0
	testutil.AsUser(t, uid, gid, func() {
		for _, rel := range rels {
			for _, p := range []string{filepath.Join(jailRoot, rel), filepath.Join("/proc", strconv.Itoa(pid), "root", rel)} {
				tried++
				stat := os.Lstat
				if strings.HasPrefix(p, "/proc/") {
					// The magic link itself is anyone's to lstat; what
					// matters is following it.
					stat = os.Stat
				}
				if _, err := stat(p); err == nil {
					t.Errorf("as the owner, stat %s works", p)
				}
				if f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
					f.Close()
					t.Errorf("as the owner, opened %s", p)
				}
				kept := filepath.Join(keep, ".kept")
				if err := os.Link(p, kept); err == nil {
					_ = os.Remove(kept)
					t.Errorf("as the owner, hard-linked %s into the home", p)
				}
				moved := filepath.Join(keep, ".moved")
				if err := os.Rename(p, moved); err == nil {
					_ = os.Rename(moved, p)
					t.Errorf("as the owner, moved %s into the home", p)
				}
				if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
					c.Close()
					t.Errorf("as the owner, connected to %s", p)
				}
			}
		}
	})
	t.Logf("as the owner, %d paths of the jail tried: none reached", tried)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s || strings.HasPrefix(v, s+"/") {
			return true
		}
	}
	return false
}
