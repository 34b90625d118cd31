package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// errHierarchyMissing is the real jailer's CgroupHierarchyMissing: no
// cgroup filesystem of the requested version is mounted (typically
// --cgroup-version 1, the default, on a cgroup2-only host).
var errHierarchyMissing = errors.New("cgroup hierarchy missing: No hierarchy found for this cgroup version")

// mountsFile is where cgroup hierarchies are discovered; tests replace it.
var mountsFile = "/proc/mounts"

// cgroupSetting is one --cgroup <controller>.<property>=<value>.
type cgroupSetting struct {
	controller, file, value string
}

func parseCgroup(arg string) (cgroupSetting, error) {
	parts := strings.Split(arg, "=")
	if len(parts) != 2 || parts[1] == "" {
		return cgroupSetting{}, fmt.Errorf("invalid cgroup argument %q: expected <controller>.<property>=<value>", arg)
	}
	controller, _, ok := strings.Cut(parts[0], ".")
	if !ok || controller == "" || strings.Contains(parts[0], "/") {
		return cgroupSetting{}, fmt.Errorf("invalid cgroup argument %q: expected <controller>.<property>=<value>", arg)
	}
	return cgroupSetting{controller: controller, file: parts[0], value: parts[1]}, nil
}

type mountEntry struct {
	fsType, dir string
	opts        []string
}

func readMounts() ([]mountEntry, error) {
	f, err := os.Open(mountsFile)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		out = append(out, mountEntry{fsType: fields[2], dir: unescapeMount(fields[1]), opts: strings.Split(fields[3], ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// unescapeMount undoes the octal escapes of /proc/mounts (\040 for space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// setupCgroups creates <hierarchy>/<parent>/<id>, writes every setting and
// moves pid into it, as the real jailer does before chrooting. Removing the
// cgroup after the VM is gone is the caller's job, as with the real one.
func setupCgroups(version int, parent, id string, settings []cgroupSetting, pid int) error {
	if len(settings) == 0 && version == 1 {
		return nil
	}
	mounts, err := readMounts()
	if err != nil {
		return err
	}
	if version == 2 {
		return setupCgroupsV2(mounts, parent, id, settings, pid)
	}
	return setupCgroupsV1(mounts, parent, id, settings, pid)
}

func setupCgroupsV1(mounts []mountEntry, parent, id string, settings []cgroupSetting, pid int) error {
	hasV1 := false
	for _, m := range mounts {
		hasV1 = hasV1 || m.fsType == "cgroup"
	}
	if !hasV1 {
		return errHierarchyMissing
	}
	var dirs []string
	for _, s := range settings {
		root := ""
		for _, m := range mounts {
			if m.fsType != "cgroup" {
				continue
			}
			for _, o := range m.opts {
				if o == s.controller {
					root = m.dir
				}
			}
		}
		if root == "" {
			return fmt.Errorf("cgroup controller %s is unavailable", s.controller)
		}
		dir := filepath.Join(root, parent, id)
		if err := mkdirCgroupV1(root, filepath.Join(parent, id), s.controller == "cpuset"); err != nil {
			return err
		}
		if err := writeCgroupFile(filepath.Join(dir, s.file), s.value); err != nil {
			return err
		}
		dirs = append(dirs, dir)
	}
	for _, d := range dirs {
		if err := writeCgroupFile(filepath.Join(d, "tasks"), fmt.Sprint(pid)); err != nil {
			return err
		}
	}
	return nil
}

// mkdirCgroupV1 creates rel under root one level at a time. A new cpuset
// cgroup starts with empty cpus and mems, which forbids attaching tasks, so
// each new level inherits them from its parent.
func mkdirCgroupV1(root, rel string, cpuset bool) error {
	cur := root
	for _, c := range strings.Split(rel, "/") {
		next := filepath.Join(cur, c)
		if err := os.Mkdir(next, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", next, err)
		}
		if cpuset {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := inheritCgroupFile(cur, next, f); err != nil {
					return err
				}
			}
		}
		cur = next
	}
	return nil
}

func inheritCgroupFile(parent, child, name string) error {
	cur, err := os.ReadFile(filepath.Join(child, name))
	if err == nil && strings.TrimSpace(string(cur)) != "" {
		return nil
	}
	v, err := os.ReadFile(filepath.Join(parent, name))
	if err != nil {
		return fmt.Errorf("inherit %s: %w", name, err)
	}
	return writeCgroupFile(filepath.Join(child, name), strings.TrimSpace(string(v)))
}

func setupCgroupsV2(mounts []mountEntry, parent, id string, settings []cgroupSetting, pid int) error {
	root := ""
	for _, m := range mounts {
		if m.fsType == "cgroup2" {
			root = m.dir
			break
		}
	}
	if root == "" {
		return errHierarchyMissing
	}
	if len(settings) == 0 {
		// Without settings no cgroup is created; the process only joins
		// the parent cgroup, when there is one.
		p := filepath.Join(root, parent)
		if _, err := os.Stat(p); err != nil {
			return nil
		}
		return writeCgroupFile(filepath.Join(p, "cgroup.procs"), fmt.Sprint(pid))
	}
	avail, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read cgroup controllers: %w", err)
	}
	have := map[string]bool{}
	for _, c := range strings.Fields(string(avail)) {
		have[c] = true
	}
	controllers := map[string]bool{}
	for _, s := range settings {
		if !have[s.controller] {
			return fmt.Errorf("cgroup controller %s is unavailable", s.controller)
		}
		controllers[s.controller] = true
	}
	dir := filepath.Join(root, parent, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	// Controllers must be enabled in every ancestor's subtree_control.
	cur := root
	for _, c := range append([]string{""}, strings.Split(parent, "/")...) {
		cur = filepath.Join(cur, c)
		for ctl := range controllers {
			if err := writeCgroupFile(filepath.Join(cur, "cgroup.subtree_control"), "+"+ctl); err != nil {
				return err
			}
		}
	}
	for _, s := range settings {
		if err := writeCgroupFile(filepath.Join(dir, s.file), s.value); err != nil {
			return err
		}
	}
	return writeCgroupFile(filepath.Join(dir, "cgroup.procs"), fmt.Sprint(pid))
}

// writeCgroupFile writes one control file. O_CREATE changes nothing on a
// cgroup filesystem (control files exist or cannot be created) and lets
// tests use a plain directory tree.
func writeCgroupFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write cgroup file: %w", err)
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}
