package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"banger/internal/execx"
)

// inode is what the tests read back from an image with debugfs stat.
type inode struct {
	Type         string
	Mode         uint32 // permission bits as debugfs prints them
	UID, GID     uint32
	Links        int
	Major, Minor int
	LinkTarget   string
	Size         int64
}

var (
	reType   = regexp.MustCompile(`Type: ([a-zA-Z ]+?)\s+Mode:\s+(\d+)`)
	reOwner  = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	reSize   = regexp.MustCompile(`Size: (\d+)`)
	reLinks  = regexp.MustCompile(`Links: (\d+)`)
	reDev    = regexp.MustCompile(`Device major/minor number: ([0-9]+):([0-9]+)`)
	reTarget = regexp.MustCompile(`Fast link dest: "(.*)"`)
)

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := execx.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

func statInode(t *testing.T, img, p string) inode {
	t.Helper()
	out, err := exec.Command(tool(t, "debugfs"), "-R", "stat "+quote(p), img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v\n%s", p, err, out)
	}
	s := string(out)
	m := reType.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("debugfs stat %s: no inode in output:\n%s", p, s)
	}
	var in inode
	in.Type = m[1]
	mode, _ := strconv.ParseUint(m[2], 8, 32)
	in.Mode = uint32(mode)
	if m := reOwner.FindStringSubmatch(s); m != nil {
		u, _ := strconv.Atoi(m[1])
		g, _ := strconv.Atoi(m[2])
		in.UID, in.GID = uint32(u), uint32(g)
	}
	if m := reLinks.FindStringSubmatch(s); m != nil {
		in.Links, _ = strconv.Atoi(m[1])
	}
	if m := reSize.FindStringSubmatch(s); m != nil {
		in.Size, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reDev.FindStringSubmatch(s); m != nil {
		in.Major, _ = strconv.Atoi(m[1])
		in.Minor, _ = strconv.Atoi(m[2])
	}
	if m := reTarget.FindStringSubmatch(s); m != nil {
		in.LinkTarget = m[1]
	}
	return in
}

func requireClean(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command(tool(t, "e2fsck"), "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func needTools(t *testing.T) {
	t.Helper()
	tool(t, "mkfs.ext4")
	tool(t, "debugfs")
	tool(t, "e2fsck")
}

// tarEntry is one header (and body for regular files) of a test archive.
type tarEntry struct {
	h    tar.Header
	body string
}

func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write tar header %s: %v", h.Name, err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dirE(name string, mode int64) tarEntry {
	return tarEntry{h: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}

func fileE(name string, mode int64, body string) tarEntry {
	return tarEntry{h: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, body: body}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// forOwnerModes runs fn once with owners given by the debugfs pass and, as
// root, once more with owners staged by chown.
func forOwnerModes(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	for _, chown := range []bool{false, true} {
		name := "debugfs-owners"
		if chown {
			if os.Geteuid() != 0 {
				continue
			}
			name = "staged-owners"
		}
		t.Run(name, func(t *testing.T) {
			old := noChown
			noChown = !chown
			t.Cleanup(func() { noChown = old })
			fn(t)
		})
	}
}
