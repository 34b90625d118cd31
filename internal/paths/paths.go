// Package paths names every directory and file banger keeps on the host. The
// layout follows the XDG base directories of the user bangerd runs as, so a
// test or a second developer account gets a fully separate tree by setting
// HOME / XDG_* variables. docs/architecture.md mirrors this file.
package paths

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// Layout is the resolved set of banger paths for one owner.
type Layout struct {
	ConfigDir  string // ~/.config/banger
	ConfigFile string // ~/.config/banger/config.toml
	StateDir   string // ~/.local/state/banger
	CacheDir   string // ~/.cache/banger
	RuntimeDir string // $XDG_RUNTIME_DIR/banger or /tmp/banger-<uid>

	DBPath     string // StateDir/banger.db
	DaemonLog  string // StateDir/bangerd.log
	VMsDir     string // StateDir/vms/<id>/
	ImagesDir  string // StateDir/images/<sha256>/
	KernelsDir string // StateDir/kernels/<id>/
	TmpDir     string // StateDir/tmp (staging on the same filesystem as the stores)
	InitrdDir  string // CacheDir/initrd (kernel modules + agent, per pair)
	SSHDir     string // StateDir/ssh: owner key, managed known_hosts
	KnownHosts string // SSHDir/known_hosts
	SSHKey     string // SSHDir/id_ed25519 (default ssh_key_path)
	SSHConfig  string // ConfigDir/ssh_config, Include-able from ~/.ssh/config

	SocketPath string // RuntimeDir/bangerd.sock
	LockPath   string // RuntimeDir/bangerd.lock
	VMRunDir   string // RuntimeDir/vm/<id>/ (short socket paths)
}

// envKeys are the variables that move banger's layout.
var envKeys = []string{"XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "TMPDIR"}

// FromEnv resolves the layout from the environment of the current user.
func FromEnv() (Layout, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		// No $HOME (a service, env -i): the account's home will do.
		u, uerr := user.Current()
		if uerr != nil || u.HomeDir == "" {
			return Layout{}, fmt.Errorf("resolve home: %w", err)
		}
		home = u.HomeDir
	}
	env := make(map[string]string, len(envKeys))
	for _, k := range envKeys {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	return ForUser(home, os.Getuid(), env), nil
}

// ForUser resolves the layout a process of user uid with home directory
// home and environment env (XDG_* and TMPDIR; other keys are ignored) would
// use. FromEnv is ForUser for the current process; a supervisor running as
// root uses it to find the socket of the bangerd it starts for the owner.
// Relative XDG values are ignored, as the XDG specification asks.
func ForUser(home string, uid int, env map[string]string) Layout {
	get := func(k, def string) string {
		if v := env[k]; v != "" && filepath.IsAbs(v) {
			return v
		}
		return def
	}
	config := filepath.Join(get("XDG_CONFIG_HOME", filepath.Join(home, ".config")), "banger")
	state := filepath.Join(get("XDG_STATE_HOME", filepath.Join(home, ".local", "state")), "banger")
	cache := filepath.Join(get("XDG_CACHE_HOME", filepath.Join(home, ".cache")), "banger")
	tmp := env["TMPDIR"] // as os.TempDir
	if tmp == "" {
		tmp = "/tmp"
	}
	runtime := filepath.Join(tmp, "banger-"+strconv.Itoa(uid))
	if v := env["XDG_RUNTIME_DIR"]; v != "" && filepath.IsAbs(v) {
		runtime = filepath.Join(v, "banger")
	}
	return New(config, state, cache, runtime)
}

// New builds a layout from its four roots.
func New(configDir, stateDir, cacheDir, runtimeDir string) Layout {
	return Layout{
		ConfigDir:  configDir,
		ConfigFile: filepath.Join(configDir, "config.toml"),
		StateDir:   stateDir,
		CacheDir:   cacheDir,
		RuntimeDir: runtimeDir,
		DBPath:     filepath.Join(stateDir, "banger.db"),
		DaemonLog:  filepath.Join(stateDir, "bangerd.log"),
		VMsDir:     filepath.Join(stateDir, "vms"),
		ImagesDir:  filepath.Join(stateDir, "images"),
		KernelsDir: filepath.Join(stateDir, "kernels"),
		TmpDir:     filepath.Join(stateDir, "tmp"),
		InitrdDir:  filepath.Join(cacheDir, "initrd"),
		SSHDir:     filepath.Join(stateDir, "ssh"),
		KnownHosts: filepath.Join(stateDir, "ssh", "known_hosts"),
		SSHKey:     filepath.Join(stateDir, "ssh", "id_ed25519"),
		SSHConfig:  filepath.Join(configDir, "ssh_config"),
		SocketPath: filepath.Join(runtimeDir, "bangerd.sock"),
		LockPath:   filepath.Join(runtimeDir, "bangerd.lock"),
		VMRunDir:   filepath.Join(runtimeDir, "vm"),
	}
}

// VMDir is the state directory of one VM (disks, console log).
func (l Layout) VMDir(id string) string { return filepath.Join(l.VMsDir, id) }

// VMRun is the runtime directory of one VM (sockets, pid file).
func (l Layout) VMRun(id string) string { return filepath.Join(l.VMRunDir, id) }

// File names inside a VM's directories.
const (
	RootDisk = "root.ext4"
	// RootCOW replaces RootDisk for a VM whose root is a dm snapshot of
	// its image: the snapshot's copy-on-write store.
	RootCOW = "root.cow"
	// RootOverlay replaces RootDisk for a VM whose root is a qcow2 overlay
	// over its image (storage overlay, QEMU only).
	RootOverlay = "root.qcow2"
	WorkDisk    = "work.ext4"
	ConsoleLog  = "console.log"
	AgentSock   = "agent.sock"
	ConsoleSock = "console.sock"
	QMPSock     = "qmp.sock"
	PidFile     = "vmm.pid"
	HostKey     = "ssh_host_ed25519_key"
)

// EnsureDaemonDirs creates every directory bangerd writes, private to the
// owner, and checks that the runtime directory is really private: a runtime
// dir in /tmp that someone else created could expose the API socket.
func (l Layout) EnsureDaemonDirs() error {
	for _, d := range []string{l.ConfigDir, l.StateDir, l.CacheDir, l.VMsDir, l.ImagesDir, l.KernelsDir, l.TmpDir, l.InitrdDir, l.SSHDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return EnsurePrivateDir(l.RuntimeDir)
}

// EnsurePrivateDir creates dir 0700 if missing and verifies it is a real
// directory owned by the current user with no group/other access.
func EnsurePrivateDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("check %s: not a directory", dir)
	}
	if uid, ok := ownerUID(st); ok && uid != os.Getuid() {
		return fmt.Errorf("check %s: owned by uid %d, not %d", dir, uid, os.Getuid())
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict %s: %w", dir, err)
		}
	}
	return nil
}
