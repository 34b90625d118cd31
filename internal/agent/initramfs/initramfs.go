// Package initramfs is the agent's first boot stage: it runs as /init of
// banger's initramfs, loads the kernel modules the guest needs, mounts the
// real root (and the work disk), installs the agent into the root's /run, and
// switches root to the root's own init, to systemd with the agent as a
// runtime unit, or to the agent itself as PID 1.
//
// Nothing on the root disk is modified: the agent binary and its unit live in
// a tmpfs at /run.
package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/agent/cmdline"
	"banger/internal/agent/sys"
)

// Paths inside the initramfs and the new root.
const (
	Marker      = "/.banger-initramfs" // its presence selects this role
	ModulesList = "/lib/modules/banger.list"
	NewRoot     = "/newroot"
	AgentPath   = "/run/banger/banger-agent" // in the new root
	UnitName    = "banger-agent.service"
	WantedBy    = "sysinit.target"
)

// deviceWait bounds the wait for the root device to appear.
const deviceWait = 10 * time.Second

// Run performs the stage and execs the next init. It never returns: on a
// fatal error it reports on the console and powers off, so that the host
// sees the VMM exit rather than a hang.
func Run() {
	if err := run(); err != nil {
		fatal(err)
	}
	fatal(errors.New("switch root returned"))
}

func fatal(err error) {
	agent.Logger.Printf("FATAL: %v; powering off", err)
	if perr := sys.PowerOff(false); perr != nil {
		agent.Logger.Print(perr)
	}
	select {}
}

func run() error {
	for _, m := range []struct{ src, target, fstype, data string }{
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
	} {
		if err := sys.MountIfMissing(m.src, m.target, m.fstype, unix.MS_NOSUID, m.data); err != nil {
			return err
		}
	}
	sys.EnsureConsole()
	params, err := cmdline.Read()
	if err != nil {
		return err
	}
	if err := loadModules(ModulesList); err != nil {
		return err
	}

	if err := waitForDevice(params.Root, deviceWait); err != nil {
		return fmt.Errorf("root device: %w", err)
	}
	if err := sys.Mount(params.Root, NewRoot, params.RootFSType, 0, ""); err != nil {
		return fmt.Errorf("mount root: %w", err)
	}
	if err := sys.Mount("tmpfs", filepath.Join(NewRoot, "run"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return err
	}
	if err := copyFile("/proc/self/exe", filepath.Join(NewRoot, AgentPath), 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if params.Work != "" {
		// The work disk appears with the root disk; a short wait covers
		// a slow probe. Missing is not fatal: the VM may have none.
		if err := waitForDevice(params.Work, 2*time.Second); err != nil {
			agent.Logger.Printf("work disk: %v; continuing without it", err)
		} else if err := sys.Mount(params.Work, filepath.Join(NewRoot, "root"), "ext4", 0, ""); err != nil {
			agent.Logger.Printf("work disk: %v; continuing without it", err)
		}
	}

	next, err := ChooseInit(NewRoot, params.Init)
	if err != nil {
		return err
	}
	if next.Systemd {
		if err := InstallUnit(NewRoot); err != nil {
			return err
		}
	}
	return switchRoot(next)
}

// loadModules loads each module listed in list, in order. An absent list
// means a kernel with everything built in.
func loadModules(list string) error {
	b, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" || strings.HasPrefix(path, "#") {
			continue
		}
		if err := loadModule(path); err != nil {
			// Keep going: the root wait below names the real consequence.
			agent.Logger.Print(err)
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

func waitForDevice(path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := out.Chmod(mode); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return out.Close()
}

// NextInit is what runs as PID 1 after the switch.
type NextInit struct {
	Argv    []string // Argv[0] is the path in the new root
	Systemd bool     // the agent runs as a systemd unit
}

// ChooseInit decides the next init for the root mounted at root: the
// explicit banger.init, else systemd via /sbin/init, else the agent itself.
// Existence checks use Lstat because absolute symlinks in the new root
// (/sbin/init -> /lib/systemd/systemd) cannot be followed from outside it.
func ChooseInit(root, explicit string) (NextInit, error) {
	exists := func(p string) bool {
		_, err := os.Lstat(filepath.Join(root, p))
		return err == nil
	}
	if explicit != "" {
		if !exists(explicit) {
			return NextInit{}, fmt.Errorf("banger.init=%s: not found in the root filesystem", explicit)
		}
		return NextInit{Argv: []string{explicit}}, nil
	}
	if (exists("/lib/systemd/systemd") || exists("/usr/lib/systemd/systemd")) && exists("/sbin/init") {
		return NextInit{Argv: []string{"/sbin/init"}, Systemd: true}, nil
	}
	return NextInit{Argv: []string{AgentPath, "pid1"}}, nil
}

// Unit is the runtime unit that starts the agent under systemd. It has no
// default dependencies so that it starts as early as sysinit, in parallel
// with the rest of the boot, and is stopped late at shutdown. KillMode=process
// keeps processes started through exec alive across an agent restart. Its
// log lines go to the console too, as in the other roles.
const Unit = `[Unit]
Description=banger guest agent
DefaultDependencies=no
Before=` + WantedBy + ` shutdown.target
Conflicts=shutdown.target

[Service]
ExecStart=` + AgentPath + ` serve
Restart=always
RestartSec=1
KillMode=process
StandardOutput=journal+console
StandardError=journal+console
`

// InstallUnit writes the unit and its .wants link under root's
// /run/systemd/system, systemd's runtime unit directory.
func InstallUnit(root string) error {
	dir := filepath.Join(root, "run", "systemd", "system")
	wants := filepath.Join(dir, WantedBy+".wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("install unit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, UnitName), []byte(Unit), 0o644); err != nil {
		return fmt.Errorf("install unit: %w", err)
	}
	link := filepath.Join(wants, UnitName)
	_ = os.Remove(link)
	if err := os.Symlink(filepath.Join("..", UnitName), link); err != nil {
		return fmt.Errorf("install unit: %w", err)
	}
	return nil
}

// switchRoot frees the initramfs, moves the API mounts into the new root,
// makes it / and execs the next init.
func switchRoot(next NextInit) error {
	var rootSt unix.Stat_t
	if err := unix.Stat("/", &rootSt); err != nil {
		return fmt.Errorf("switch root: stat /: %w", err)
	}
	// The initramfs stays mounted underneath the new root forever; its
	// files are RAM, so delete them. The new root and the API mounts are
	// other filesystems and are skipped by device.
	removeTree("/", rootSt.Dev)
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		target := filepath.Join(NewRoot, m)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("switch root: %w", err)
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch root: move %s: %w", m, err)
		}
	}
	if err := unix.Chdir(NewRoot); err != nil {
		return fmt.Errorf("switch root: chdir: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move new root onto /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: chdir /: %w", err)
	}
	if err := unix.Exec(next.Argv[0], next.Argv, os.Environ()); err != nil {
		return fmt.Errorf("exec next init %s: %w", next.Argv[0], err)
	}
	return nil
}

// removeTree deletes everything under dir that lives on device dev.
func removeTree(dir string, dev uint64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			removeTree(p, dev)
			if p != NewRoot {
				_ = unix.Rmdir(p)
			}
			continue
		}
		_ = unix.Unlink(p)
	}
}
