package helper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"banger/internal/jail"
	"banger/internal/privop"
)

// JailLedgerFile is the jail ledger's name inside the helper's state
// directory, next to LedgerFile.
const JailLedgerFile = "jails.json"

// JailDir is the default jail base's name inside the state directory.
const JailDir = "jail"

// JailLedger records the Firecracker jails the helper staged: the jail's
// root and, once started, the process running in it (pid and start time,
// which together name that process and not a later one with the same
// pid). dial_jail, signal_vmm and cleanup_jail act only on recorded jails. An
// entry is recorded before the jail is made (intent first), so a crash
// never leaves an unrecorded jail, and dropped only once the jail is gone.
// It is a JSON file in the helper's root-owned state directory, replaced
// atomically on every change:
//
//	{"jails": {"VMID": {"exec_name": "firecracker", "chroot": "/var/lib/banger-root/jail/firecracker/VMID/root",
//	                    "uid": 1879113728, "tap": "tap-fc-0123abcd", "pid": 1234, "pid_start": 5678, "created_at": "..."}}}
type JailLedger struct {
	path string
	mu   sync.Mutex
	st   jailState
}

type jailState struct {
	Jails map[string]JailEntry `json:"jails"`
}

// JailEntry is a recorded jail. PID is 0 until the jailer started. UID
// is the VM's own uid (and gid), which no other jail has while this one is
// recorded; Tap is the tap handed to it, if any.
type JailEntry struct {
	ExecName  string    `json:"exec_name"`
	Chroot    string    `json:"chroot"`
	UID       int       `json:"uid,omitempty"`
	Tap       string    `json:"tap,omitempty"`
	PID       int       `json:"pid,omitempty"`
	PIDStart  uint64    `json:"pid_start,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// OpenJailLedger loads the jail ledger in stateDir, or starts an empty one
// if the file does not exist. A ledger that is not a regular file, does
// not parse, or names an invalid VM id is an error: the helper must not
// forget a jail it made.
func OpenJailLedger(stateDir string) (*JailLedger, error) {
	l := &JailLedger{path: filepath.Join(stateDir, JailLedgerFile), st: jailState{Jails: map[string]JailEntry{}}}
	fi, err := os.Lstat(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open jail ledger: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open jail ledger: %s is not a regular file", l.path)
	}
	data, err := os.ReadFile(l.path)
	if err != nil {
		return nil, fmt.Errorf("open jail ledger: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l.st); err != nil {
		return nil, fmt.Errorf("open jail ledger %s: %w", l.path, err)
	}
	if l.st.Jails == nil {
		l.st.Jails = map[string]JailEntry{}
	}
	for id := range l.st.Jails {
		if err := privop.ValidVMID(id); err != nil {
			return nil, fmt.Errorf("open jail ledger %s: %w", l.path, err)
		}
	}
	return l, nil
}

// Jail returns the entry of a recorded jail.
func (l *JailLedger) Jail(vmID string) (JailEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.st.Jails[vmID]
	return e, ok
}

// VMIDs lists the VMs with a recorded jail, sorted.
func (l *JailLedger) VMIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.st.Jails))
	for id := range l.st.Jails {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// add records a new jail; it reports false, changing nothing, when vmID
// already has one.
func (l *JailLedger) add(vmID string, e JailEntry) (bool, error) {
	return l.update(func(st *jailState) bool {
		if _, ok := st.Jails[vmID]; ok {
			return false
		}
		st.Jails[vmID] = e
		return true
	})
}

// set replaces vmID's entry.
func (l *JailLedger) set(vmID string, e JailEntry) error {
	_, err := l.update(func(st *jailState) bool {
		st.Jails[vmID] = e
		return true
	})
	return err
}

// remove forgets vmID's jail.
func (l *JailLedger) remove(vmID string) error {
	_, err := l.update(func(st *jailState) bool {
		_, ok := st.Jails[vmID]
		delete(st.Jails, vmID)
		return ok
	})
	return err
}

// update applies fn to a copy of the state and, if fn reports a change,
// persists the copy before making it current.
func (l *JailLedger) update(fn func(*jailState) bool) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := jailState{Jails: make(map[string]JailEntry, len(l.st.Jails))}
	for k, v := range l.st.Jails {
		next.Jails[k] = v
	}
	if !fn(&next) {
		return false, nil
	}
	if err := writeAtomic(l.path, next); err != nil {
		return false, fmt.Errorf("jail ledger: %w", err)
	}
	l.st = next
	return true, nil
}

// configureJails fills in the jail defaults from the state dir.
func configureJails(cfg *Config) error {
	if cfg.JailBase == "" && cfg.StateDir != "" {
		cfg.JailBase = filepath.Join(cfg.StateDir, JailDir)
	}
	if cfg.JailBase != "" && (!filepath.IsAbs(cfg.JailBase) || filepath.Clean(cfg.JailBase) != cfg.JailBase) {
		return fmt.Errorf("jail base %q: want a clean absolute path", cfg.JailBase)
	}
	if cfg.Jails == nil && cfg.StateDir != "" {
		l, err := OpenJailLedger(cfg.StateDir)
		if err != nil {
			return err
		}
		cfg.Jails = l
	}
	return nil
}

// jailsReady refuses the jail ops when the helper has no jail base or
// ledger.
func (s *Server) jailsReady() error {
	if s.cfg.JailBase == "" || s.cfg.Jails == nil {
		return privop.Errorf(privop.CodeInternal, "firecracker jails not configured (the helper has no state dir)")
	}
	return nil
}

// jailErr gives a jail failure its code: refusals of unsafe paths or fds
// are forbidden, an existing jail is a bad request, the rest internal.
func jailErr(err error) error {
	var e *privop.Error
	switch {
	case err == nil, errors.As(err, &e):
		return err
	case errors.Is(err, jail.ErrUnsafe):
		return &privop.Error{Code: privop.CodeForbidden, Message: err.Error()}
	case errors.Is(err, jail.ErrExists):
		return &privop.Error{Code: privop.CodeBadRequest, Message: err.Error()}
	}
	return err
}

// prepareJailBase creates the jail base (root, 0700) if missing; its
// parent must exist. jail.Stage checks it at every launch.
func prepareJailBase(base string) error {
	if err := os.Mkdir(base, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create jail base: %w", err)
	}
	return nil
}

// recordedLayout returns the layout of a recorded jail, checking that the
// record agrees with the configured base.
func (s *Server) recordedLayout(vmID string, e JailEntry) (jail.Layout, error) {
	l, err := jail.NewLayout(s.cfg.JailBase, e.ExecName, vmID)
	if err != nil {
		return l, fmt.Errorf("jail of VM %s: %w", vmID, err)
	}
	if l.Chroot() != e.Chroot {
		return l, fmt.Errorf("jail of VM %s: recorded at %s, not under the jail base %s", vmID, e.Chroot, s.cfg.JailBase)
	}
	return l, nil
}

// cleanupJail removes a VM's jail unless its firecracker still runs. A VM
// with neither a record nor a jail directory is fine; a jail directory
// without a record is refused, since the helper cannot tell whether a
// firecracker still uses it.
func (s *Server) cleanupJail(o privop.CleanupJail) error {
	if err := s.jailsReady(); err != nil {
		return err
	}
	s.jailMu.Lock()
	defer s.jailMu.Unlock()
	e, ok := s.cfg.Jails.Jail(o.VMID)
	if !ok {
		found, err := jail.Find(s.cfg.JailBase, o.VMID)
		if err != nil {
			return err
		}
		if len(found) > 0 {
			return privop.Errorf(privop.CodeForbidden, "jail %s is not in the helper's ledger; remove it by hand once no firecracker uses it", found[0].VMDir())
		}
		return nil
	}
	if jail.Alive(e.PID, e.PIDStart) {
		return privop.Errorf(privop.CodeBadRequest, "firecracker of VM %s still runs (pid %d): stop it first", o.VMID, e.PID)
	}
	return s.removeJail(o.VMID, e)
}

// removeJail unmounts and removes a recorded jail whose process is gone,
// then forgets it.
func (s *Server) removeJail(vmID string, e JailEntry) error {
	l, err := s.recordedLayout(vmID, e)
	if err != nil {
		return err
	}
	if err := jail.Remove(l); err != nil {
		return err
	}
	s.releaseHolds(vmID)
	if err := s.cfg.Jails.remove(vmID); err != nil {
		return err
	}
	if err := s.bootCache().prune(); err != nil {
		s.log.Warn("boot cache not pruned", "err", err)
	}
	return nil
}

// reconcileJails removes, at start-up, the recorded jails whose process
// is gone (the VM stopped while the helper was down, or a launch died
// half-way). Jails still running are kept; failures are logged and left
// for cleanup_jail.
func (s *Server) reconcileJails() {
	if s.jailsReady() != nil {
		return
	}
	s.jailMu.Lock()
	defer s.jailMu.Unlock()
	for _, id := range s.cfg.Jails.VMIDs() {
		e, _ := s.cfg.Jails.Jail(id)
		if jail.Alive(e.PID, e.PIDStart) {
			s.log.Info("jail in use", "vm_id", id, "pid", e.PID)
			continue
		}
		if err := s.removeJail(id, e); err != nil {
			s.log.Error("stale jail not removed", "vm_id", id, "err", err)
			continue
		}
		s.log.Info("removed stale jail", "vm_id", id)
	}
}
