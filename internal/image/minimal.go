package image

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"strings"
	"time"

	"banger/internal/execx"
)

// MinimalOSID is the os-release ID of the embedded minimal image.
const MinimalOSID = "banger-minimal"

// minimalEpoch is the mtime of every entry of the minimal image, so that
// two builds differ only where mkfs itself adds randomness.
var minimalEpoch = time.Unix(946684800, 0) // 2000-01-01

// BuildMinimal builds the embedded default image at out: the host's static
// busybox with its applet links and just enough of /etc for a root shell.
// It needs no network. busybox comes from opts.Busybox, else from PATH.
func BuildMinimal(ctx context.Context, out string, opts BuildOptions) (*Result, error) {
	busybox := opts.Busybox
	if busybox == "" {
		p, err := execx.LookPath("busybox")
		if err != nil {
			return nil, fmt.Errorf("find busybox (install busybox-static): %w", err)
		}
		busybox = p
	}
	if err := checkStatic(busybox); err != nil {
		return nil, err
	}
	list, err := execx.Default.Run(ctx, busybox, "--list-full")
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	return withStaging(out, &opts, func(s *stager) (*Result, error) {
		opts.progress("staging busybox rootfs")
		if err := stageMinimal(s, busybox, list, opts.hostname()); err != nil {
			return nil, err
		}
		return buildExt4(ctx, s, out, &opts)
	})
}

// checkStatic refuses a dynamically linked busybox: the image has no
// libc, so the first exec in the guest would fail.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("read busybox %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox %s is not statically linked; install busybox-static", p)
		}
	}
	return nil
}

func stageMinimal(s *stager, busybox string, list []byte, hostname string) error {
	dir := func(p string, mode uint32) *Entry {
		return &Entry{Path: p, Kind: KindDir, Mode: mode, ModTime: minimalEpoch}
	}
	for _, d := range []*Entry{
		dir("bin", 0o755), dir("sbin", 0o755), dir("usr", 0o755), dir("usr/bin", 0o755),
		dir("usr/sbin", 0o755), dir("usr/local", 0o755), dir("usr/local/bin", 0o755),
		dir("etc", 0o755), dir("root", 0o700), dir("tmp", 0o1777), dir("proc", 0o555),
		dir("sys", 0o555), dir("dev", 0o755), dir("run", 0o755), dir("var", 0o755),
		dir("var/tmp", 0o1777), dir("mnt", 0o755), dir("home", 0o755),
	} {
		if err := s.add(d, nil); err != nil {
			return err
		}
	}
	if err := s.add(&Entry{Path: "", Kind: KindDir, Mode: 0o755, ModTime: minimalEpoch}, nil); err != nil {
		return err
	}
	bb, err := os.Open(busybox)
	if err != nil {
		return fmt.Errorf("open busybox: %w", err)
	}
	defer bb.Close()
	if err := s.add(&Entry{Path: "bin/busybox", Kind: KindFile, Mode: 0o755, ModTime: minimalEpoch}, bb); err != nil {
		return err
	}

	applets := map[string]bool{"bin/sh": true}
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		rel, err := cleanName(strings.TrimSpace(sc.Text()))
		if err != nil || rel == "" || rel == "bin/busybox" {
			continue
		}
		applets[rel] = true
	}
	for rel := range applets {
		if err := s.add(&Entry{Path: rel, Kind: KindSymlink, Mode: 0o777, Target: "/bin/busybox", ModTime: minimalEpoch}, nil); err != nil {
			return fmt.Errorf("applet %s: %w", rel, err)
		}
	}

	files := []struct {
		path string
		mode uint32
		body string
	}{
		{"etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{"etc/shadow", 0o600, "root:*:0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n"},
		{"etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"},
		{"etc/hostname", 0o644, hostname + "\n"},
		{"etc/hosts", 0o644, "127.0.0.1\tlocalhost\n127.0.1.1\t" + hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		{"etc/profile", 0o644, "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" +
			"export HOME=${HOME:-/root}\nPS1='\\u@\\h:\\w\\$ '\nexport PS1\n"},
		{"etc/os-release", 0o644, "NAME=\"banger minimal\"\nID=" + MinimalOSID + "\nPRETTY_NAME=\"banger minimal (busybox)\"\n"},
		{"etc/shells", 0o644, "/bin/sh\n/bin/ash\n"},
	}
	for _, f := range files {
		e := &Entry{Path: f.path, Kind: KindFile, Mode: f.mode, ModTime: minimalEpoch}
		if err := s.add(e, strings.NewReader(f.body)); err != nil {
			return err
		}
	}
	// The kernel wants a console on the root before any devtmpfs exists.
	for _, n := range []*Entry{
		{Path: "dev/console", Kind: KindChar, Mode: 0o600, Major: 5, Minor: 1},
		{Path: "dev/null", Kind: KindChar, Mode: 0o666, Major: 1, Minor: 3},
	} {
		if err := s.add(n, nil); err != nil {
			return err
		}
	}
	return nil
}
