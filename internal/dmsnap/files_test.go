package dmsnap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenUnder(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "root")
	outside := filepath.Join(top, "secret")
	for _, d := range []string{root, filepath.Join(root, "images")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) {
		if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(outside)
	write(filepath.Join(root, "images", "base.img"))
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(outside, filepath.Join(root, "link.img")))
	must(os.Symlink(filepath.Join(root, "images", "base.img"), filepath.Join(root, "inside-link.img")))
	must(os.Symlink(top, filepath.Join(root, "dirlink")))
	must(os.Symlink(root, filepath.Join(top, "rootlink")))
	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o600))

	f, err := openUnder(root, filepath.Join(root, "images", "base.img"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != filepath.Join(root, "images", "base.img") {
		t.Errorf("name %q", f.Name())
	}
	if fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("O_NONBLOCK left set")
	}
	f.Close()

	for _, tc := range []struct {
		name, root, path string
	}{
		{"outside", root, outside},
		{"root itself", root, root},
		{"sibling prefix", root, root + "x/base.img"},
		{"dotdot", root, filepath.Join(root, "images") + "/../../secret"},
		{"relative", root, "images/base.img"},
		{"symlink to outside", root, filepath.Join(root, "link.img")},
		{"symlink to inside", root, filepath.Join(root, "inside-link.img")},
		{"symlinked directory", root, filepath.Join(root, "dirlink", "secret")},
		{"symlinked root", filepath.Join(top, "rootlink"), filepath.Join(top, "rootlink", "images", "base.img")},
		{"directory", root, filepath.Join(root, "images")},
		{"fifo", root, filepath.Join(root, "fifo")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := openUnder(tc.root, tc.path, unix.O_RDONLY, 0)
			if err == nil {
				f.Close()
				t.Fatalf("openUnder(%s) accepted", tc.path)
			}
			if tc.name != "symlinked root" && !errors.Is(err, ErrOutsideRoot) {
				t.Errorf("err = %v, want ErrOutsideRoot", err)
			}
		})
	}

	// Creating exclusively never follows a planted symlink either.
	must(os.Symlink(filepath.Join(top, "created-outside"), filepath.Join(root, "new.cow")))
	if f, err := openUnder(root, filepath.Join(root, "new.cow"), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600); err == nil {
		f.Close()
		t.Fatal("O_CREAT through a symlink accepted")
	}
	if _, err := os.Stat(filepath.Join(top, "created-outside")); err == nil {
		t.Fatal("a file was created outside the root")
	}
	f, err = openUnder(root, filepath.Join(root, "images", "vm.cow"), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	id, size, nlink, err := identify(f)
	f.Close()
	if err != nil || id.Ino == 0 || size != 0 || nlink != 1 || !strings.HasSuffix(id.Path, "vm.cow") {
		t.Fatalf("identify = %+v %d %d %v", id, size, nlink, err)
	}
}

func TestFileMatches(t *testing.T) {
	f := File{Path: "/r/a.cow", Dev: 5, Ino: 9}
	for _, tc := range []struct {
		l    Loop
		want bool
	}{
		{Loop{Backing: "/r/a.cow", BackingDev: 5, BackingIno: 9}, true},
		{Loop{Backing: "/r/other", BackingDev: 5, BackingIno: 9}, true}, // renamed: same inode
		{Loop{Backing: "/r/a.cow", BackingDev: 5, BackingIno: 10}, false},
		{Loop{Backing: "/r/a.cow"}, true}, // backend without inodes: by path
		{Loop{Backing: "/r/b.cow"}, false},
	} {
		if got := f.Matches(tc.l); got != tc.want {
			t.Errorf("Matches(%+v) = %v, want %v", tc.l, got, tc.want)
		}
	}
	if (File{}).Matches(Loop{}) {
		t.Error("empty file matches an empty loop")
	}
}

func TestScanLoops(t *testing.T) {
	sys := t.TempDir()
	mk := func(p, content string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(sys, "loop0", "dev"), "7:0\n")
	mk(filepath.Join(sys, "loop0", "ro"), "1\n")
	mk(filepath.Join(sys, "loop0", "loop", "backing_file"), "/r/base.img\n")
	mk(filepath.Join(sys, "loop0", "loop", "autoclear"), "1\n")
	mk(filepath.Join(sys, "loop0", "holders", "dm-3"), "")
	mk(filepath.Join(sys, "loop1", "dev"), "7:1\n") // unbound
	mk(filepath.Join(sys, "loop2", "dev"), "7:2\n")
	mk(filepath.Join(sys, "loop2", "ro"), "0\n")
	mk(filepath.Join(sys, "loop2", "loop", "backing_file"), "/r/vm 1.cow (deleted)\n")
	mk(filepath.Join(sys, "loop2", "loop", "autoclear"), "0\n")
	mk(filepath.Join(sys, "sda", "dev"), "8:0\n")
	mk(filepath.Join(sys, "loopback", "dev"), "1:1\n")
	loops, err := scanLoops(sys, "/dev")
	if err != nil {
		t.Fatal(err)
	}
	if len(loops) != 2 {
		t.Fatalf("loops = %+v", loops)
	}
	l0, l2 := loops[0], loops[1]
	if l0.Path != "/dev/loop0" || l0.DevNum() != "7:0" || !l0.ReadOnly || !l0.Autoclear || l0.Backing != "/r/base.img" || len(l0.Holders) != 1 || l0.Holders[0] != "dm-3" {
		t.Errorf("loop0 = %+v", l0)
	}
	if l2.Path != "/dev/loop2" || l2.ReadOnly || l2.Autoclear || l2.Backing != "/r/vm 1.cow" || !l2.Deleted {
		t.Errorf("loop2 = %+v", l2)
	}
}
