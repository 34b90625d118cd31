package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "firecracker-v1.16.1-x86_64")
	if err := os.WriteFile(target, []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "fc")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig([]string{"--id", "vm-1", "--exec-file", link, "--uid", "1000", "--gid", "1001",
		"--chroot-base-dir", "/base", "--cgroup", "cpuset.mems=0", "--resource-limit", "no-file=4096",
		"--resource-limit", "fsize=1024", "--", "--api-sock", "/run/api.sock"})
	if err != nil {
		t.Fatal(err)
	}
	// The exec name is the basename of the canonicalized exec file.
	if c.execName != "firecracker-v1.16.1-x86_64" || c.execFile != target {
		t.Fatalf("exec = %q %q", c.execName, c.execFile)
	}
	if c.chroot != "/base/firecracker-v1.16.1-x86_64/vm-1/root" {
		t.Fatalf("chroot = %q", c.chroot)
	}
	if c.uid != 1000 || c.gid != 1001 || c.cgroupVersion != 1 || c.parentCgroup != c.execName {
		t.Fatalf("config = %+v", c)
	}
	if len(c.cgroups) != 1 || c.cgroups[0] != (cgroupSetting{controller: "cpuset", file: "cpuset.mems", value: "0"}) {
		t.Fatalf("cgroups = %+v", c.cgroups)
	}
	if c.noFile != 4096 || c.fsize == nil || *c.fsize != 1024 {
		t.Fatalf("limits = %d %v", c.noFile, c.fsize)
	}
	if strings.Join(c.fcArgs, " ") != "--api-sock /run/api.sock" {
		t.Fatalf("firecracker args = %q", c.fcArgs)
	}

	d, err := parseConfig([]string{"--id", "vm-1", "--exec-file", target, "--uid", "1", "--gid", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.chroot != "/srv/jailer/firecracker-v1.16.1-x86_64/vm-1/root" || d.noFile != defaultNoFile {
		t.Fatalf("defaults: chroot %q no-file %d", d.chroot, d.noFile)
	}
}

func TestParseConfigErrors(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "firecracker")
	if err := os.WriteFile(exe, []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := []string{"--exec-file", exe, "--uid", "1", "--gid", "1"}
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{base, "missing required argument --id"},
		{[]string{"--id", "a", "--uid", "1", "--gid", "1"}, "--exec-file"},
		{with("--id", ""), "invalid instance ID"},
		{with("--id", "a/b"), "invalid instance ID"},
		{with("--id", "vm_1"), "invalid instance ID"},
		{with("--id", "vé"), "invalid instance ID"},
		{with("--id", strings.Repeat("a", 65)), "invalid instance ID"},
		{with("--id", "a", "--daemonize"), "--daemonize is not supported"},
		{with("--id", "a", "--new-pid-ns"), "--new-pid-ns is not supported"},
		{[]string{"--id", "a", "--exec-file", exe, "--uid", "-1", "--gid", "1"}, "invalid --uid"},
		{[]string{"--id", "a", "--exec-file", dir + "/nope", "--uid", "1", "--gid", "1"}, "canonicalize exec file"},
		{[]string{"--id", "a", "--exec-file", dir, "--uid", "1", "--gid", "1"}, "is not a file"},
		{with("--id", "a", "--cgroup", "cpusetmems=0"), "invalid cgroup argument"},
		{with("--id", "a", "--cgroup", "cpuset.mems="), "invalid cgroup argument"},
		{with("--id", "a", "--cgroup", "cpuset.mems=0=1"), "invalid cgroup argument"},
		{with("--id", "a", "--cgroup-version", "3"), "invalid cgroup version"},
		{with("--id", "a", "--parent-cgroup", "../x"), "invalid parent cgroup path"},
		{with("--id", "a", "--parent-cgroup", "/x"), "invalid parent cgroup path"},
		{with("--id", "a", "--resource-limit", "cpu=1"), "invalid resource limit argument"},
		{with("--id", "a", "--resource-limit", "fsize=x"), "invalid resource limit value"},
		{with("--id", "a", "--id", "b"), "more than once"},
		{with("--id", "a", "--node", "0"), "wasn't expected"},
	} {
		_, err := parseConfig(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestCopyExec(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("new binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()

	// A regular file already there (staged by the caller) is written over
	// in place, as the jailer does: opened without O_TRUNC, so a longer
	// old file keeps its tail, and its mode stays. (banger's helper
	// stages the same binary, so nothing is left over.)
	dst := filepath.Join(dir, "dst")
	if err := os.WriteFile(dst, []byte("an older and longer binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := copyExec(src, dst, uid, gid); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	st, _ := os.Stat(dst)
	if string(b) != "new binarynd longer binary" || st.Mode().Perm() != 0o600 {
		t.Fatalf("copy = %q mode %v", b, st.Mode())
	}

	// A symlink is refused and its target left alone.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dir, "sym")
	if err := os.Symlink(target, sym); err != nil {
		t.Fatal(err)
	}
	if err := copyExec(src, sym, uid, gid); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("copyExec onto a symlink = %v", err)
	}
	// So is a hard link.
	hard := filepath.Join(dir, "hard")
	if err := os.Link(target, hard); err != nil {
		t.Fatal(err)
	}
	if err := copyExec(src, hard, uid, gid); err == nil || !strings.Contains(err.Error(), "hard links") {
		t.Fatalf("copyExec onto a hard link = %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" {
		t.Fatalf("target overwritten: %q", b)
	}
}

func writeMounts(t *testing.T, content string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mounts")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	old := mountsFile
	mountsFile = p
	t.Cleanup(func() { mountsFile = old })
}

func TestCgroupV1OnCgroup2OnlyHost(t *testing.T) {
	writeMounts(t, "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n")
	s, _ := parseCgroup("cpuset.mems=0")
	err := setupCgroups(1, "firecracker", "vm", []cgroupSetting{s}, 1)
	if !errors.Is(err, errHierarchyMissing) || !strings.Contains(err.Error(), "No hierarchy found for this cgroup version") {
		t.Fatalf("setupCgroups = %v", err)
	}
	// Without --cgroup nothing is looked up.
	if err := setupCgroups(1, "firecracker", "vm", nil, 1); err != nil {
		t.Fatal(err)
	}
}

func TestCgroupV1(t *testing.T) {
	root := t.TempDir()
	cpuset := filepath.Join(root, "cpu set") // escaped as \040 in /proc/mounts
	if err := os.Mkdir(cpuset, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"cpuset.cpus": "0-3\n", "cpuset.mems": "0\n"} {
		if err := os.WriteFile(filepath.Join(cpuset, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeMounts(t, "cgroup "+strings.ReplaceAll(cpuset, " ", `\040`)+" cgroup rw,nosuid,cpuset 0 0\n")
	s1, _ := parseCgroup("cpuset.cpus=1")
	s2, _ := parseCgroup("cpuset.mems=0")
	if err := setupCgroups(1, "fc/parent", "vm", []cgroupSetting{s1, s2}, 4242); err != nil {
		t.Fatal(err)
	}
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(cpuset, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if read("fc/cpuset.cpus") != "0-3" || read("fc/parent/cpuset.mems") != "0" {
		t.Fatal("new cpuset levels did not inherit cpus/mems")
	}
	if read("fc/parent/vm/cpuset.cpus") != "1" || read("fc/parent/vm/tasks") != "4242" {
		t.Fatalf("vm cgroup: cpus %q tasks %q", read("fc/parent/vm/cpuset.cpus"), read("fc/parent/vm/tasks"))
	}

	s3, _ := parseCgroup("memory.max=1")
	if err := setupCgroups(1, "fc", "vm", []cgroupSetting{s3}, 1); err == nil || !strings.Contains(err.Error(), "memory is unavailable") {
		t.Fatalf("missing controller: %v", err)
	}
}

func TestCgroupV2(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu memory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeMounts(t, "cgroup2 "+root+" cgroup2 rw 0 0\n")
	s, _ := parseCgroup("cpu.max=50000 100000")
	if err := setupCgroups(2, "firecracker", "vm", []cgroupSetting{s}, 77); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{
		"cgroup.subtree_control":             "+cpu",
		"firecracker/cgroup.subtree_control": "+cpu",
		"firecracker/vm/cpu.max":             "50000 100000",
		"firecracker/vm/cgroup.procs":        "77",
	} {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", rel, b, err, want)
		}
	}
	s2, _ := parseCgroup("hugetlb.2MB.max=1")
	if err := setupCgroups(2, "firecracker", "vm", []cgroupSetting{s2}, 1); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("missing controller: %v", err)
	}
	writeMounts(t, "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n")
	if err := setupCgroups(2, "firecracker", "vm", []cgroupSetting{s}, 1); !errors.Is(err, errHierarchyMissing) {
		t.Fatalf("v2 without cgroup2: %v", err)
	}
}
