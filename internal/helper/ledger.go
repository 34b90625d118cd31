package helper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// LedgerFile is the ledger's name inside the helper's state directory.
const LedgerFile = "ledger.json"

// Ledger records every bridge and tap the helper created. The helper acts
// on a bridge or tap only if it is recorded here: a matching name is not
// proof of ownership. It is a JSON file in the helper's root-owned state
// directory, replaced atomically on every change. Entries are recorded
// before the resource is made (intent first), so a crash never leaves an
// untracked device; deleting a recorded device that is already gone is not
// an error.
type Ledger struct {
	path string
	mu   sync.Mutex
	st   ledgerState
}

type ledgerState struct {
	Bridges map[string]BridgeEntry `json:"bridges"`
	Taps    map[string]TapEntry    `json:"taps"`
}

// BridgeEntry is a recorded bridge.
type BridgeEntry struct {
	CreatedAt time.Time `json:"created_at"`
	// Gateway is the bridge address with its prefix length
	// ("172.16.0.1/24") from the last successful ensure_bridge. Ledgers
	// written before it was recorded leave it empty.
	Gateway string `json:"gateway,omitempty"`
}

// TapEntry is a recorded tap.
type TapEntry struct {
	Bridge    string    `json:"bridge"`
	UID       int       `json:"uid"`
	GID       int       `json:"gid"`
	CreatedAt time.Time `json:"created_at"`
	// IP is the guest address behind the tap and MAC the guest MAC the
	// helper derived from it: the only ones the firewall lets the tap send
	// from. Ledgers written before they were recorded leave them empty,
	// and such a tap sends nothing.
	IP  string `json:"ip,omitempty"`
	MAC string `json:"mac,omitempty"`
}

// OpenLedger loads the ledger in stateDir, or starts an empty one if the
// file does not exist. A ledger that is not a regular file, or that does
// not parse, is an error: the helper must not forget what it created.
func OpenLedger(stateDir string) (*Ledger, error) {
	l := &Ledger{path: filepath.Join(stateDir, LedgerFile), st: emptyState()}
	fi, err := os.Lstat(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open ledger: %s is not a regular file", l.path)
	}
	data, err := os.ReadFile(l.path)
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l.st); err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", l.path, err)
	}
	if l.st.Bridges == nil {
		l.st.Bridges = map[string]BridgeEntry{}
	}
	if l.st.Taps == nil {
		l.st.Taps = map[string]TapEntry{}
	}
	return l, nil
}

func emptyState() ledgerState {
	return ledgerState{Bridges: map[string]BridgeEntry{}, Taps: map[string]TapEntry{}}
}

// HasBridge reports whether name was created by the helper.
func (l *Ledger) HasBridge(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.st.Bridges[name]
	return ok
}

// Bridge returns the entry of a recorded bridge.
func (l *Ledger) Bridge(name string) (BridgeEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.st.Bridges[name]
	return e, ok
}

// Tap returns the entry of a recorded tap.
func (l *Ledger) Tap(name string) (TapEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.st.Taps[name]
	return e, ok
}

// TapsOn lists the recorded taps enslaved to bridge, sorted.
func (l *Ledger) TapsOn(bridge string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n, e := range l.st.Taps {
		if e.Bridge == bridge {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Names lists every recorded bridge and tap, sorted (bridges first).
func (l *Ledger) Names() (bridges, taps []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n := range l.st.Bridges {
		bridges = append(bridges, n)
	}
	for n := range l.st.Taps {
		taps = append(taps, n)
	}
	slices.Sort(bridges)
	slices.Sort(taps)
	return bridges, taps
}

// AddBridge records a bridge; it reports whether the bridge was new.
func (l *Ledger) AddBridge(name string) (bool, error) {
	return l.update(func(st *ledgerState) bool {
		if _, ok := st.Bridges[name]; ok {
			return false
		}
		st.Bridges[name] = BridgeEntry{CreatedAt: time.Now().UTC()}
		return true
	})
}

// SetBridgeGateway records gateway as the address of a recorded bridge; a
// bridge missing from the ledger is an error.
func (l *Ledger) SetBridgeGateway(name string, gateway netip.Prefix) error {
	missing := false
	_, err := l.update(func(st *ledgerState) bool {
		e, ok := st.Bridges[name]
		if !ok {
			missing = true
			return false
		}
		if e.Gateway == gateway.String() {
			return false
		}
		e.Gateway = gateway.String()
		st.Bridges[name] = e
		return true
	})
	if err != nil {
		return err
	}
	if missing {
		return fmt.Errorf("record gateway of bridge %s: not in the ledger", name)
	}
	return nil
}

// RemoveBridge forgets a bridge.
func (l *Ledger) RemoveBridge(name string) error {
	_, err := l.update(func(st *ledgerState) bool {
		_, ok := st.Bridges[name]
		delete(st.Bridges, name)
		return ok
	})
	return err
}

// AddTap records a tap; it reports whether the tap was new.
func (l *Ledger) AddTap(name string, e TapEntry) (bool, error) {
	return l.update(func(st *ledgerState) bool {
		if _, ok := st.Taps[name]; ok {
			return false
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = time.Now().UTC()
		}
		st.Taps[name] = e
		return true
	})
}

// ClaimTap records a tap with its guest address, or gives a recorded tap
// the address in e (keeping the rest of its entry). It refuses an IP or MAC
// another tap holds, so no two taps may send as the same guest. It returns
// the previous entry, if any, for a caller that has to undo the claim.
func (l *Ledger) ClaimTap(name string, e TapEntry) (prev TapEntry, existed bool, err error) {
	var taken string
	_, err = l.update(func(st *ledgerState) bool {
		for n, o := range st.Taps {
			if n != name && ((e.IP != "" && o.IP == e.IP) || (e.MAC != "" && o.MAC == e.MAC)) {
				taken = n
				return false
			}
		}
		prev, existed = st.Taps[name]
		if existed {
			if prev.IP == e.IP && prev.MAC == e.MAC {
				return false
			}
			next := prev
			next.IP, next.MAC = e.IP, e.MAC
			st.Taps[name] = next
			return true
		}
		if e.CreatedAt.IsZero() {
			e.CreatedAt = time.Now().UTC()
		}
		st.Taps[name] = e
		return true
	})
	if err != nil {
		return prev, existed, err
	}
	if taken != "" {
		return prev, existed, fmt.Errorf("%w: tap %s already has address %s or mac %s", errAddrTaken, taken, e.IP, e.MAC)
	}
	return prev, existed, nil
}

// errAddrTaken says a guest address or MAC belongs to another tap.
var errAddrTaken = errors.New("guest address taken")

// PutTap replaces a tap's entry as it is, to undo a ClaimTap.
func (l *Ledger) PutTap(name string, e TapEntry) error {
	_, err := l.update(func(st *ledgerState) bool {
		st.Taps[name] = e
		return true
	})
	return err
}

// TapEntries returns the entries of the recorded taps on bridge, by name.
func (l *Ledger) TapEntries(bridge string) map[string]TapEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]TapEntry{}
	for n, e := range l.st.Taps {
		if e.Bridge == bridge {
			out[n] = e
		}
	}
	return out
}

// RemoveTap forgets a tap.
func (l *Ledger) RemoveTap(name string) error {
	_, err := l.update(func(st *ledgerState) bool {
		_, ok := st.Taps[name]
		delete(st.Taps, name)
		return ok
	})
	return err
}

// update applies fn to a copy of the state and, if fn reports a change,
// persists the copy before making it current.
func (l *Ledger) update(fn func(*ledgerState) bool) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := ledgerState{Bridges: make(map[string]BridgeEntry, len(l.st.Bridges)), Taps: make(map[string]TapEntry, len(l.st.Taps))}
	for k, v := range l.st.Bridges {
		next.Bridges[k] = v
	}
	for k, v := range l.st.Taps {
		next.Taps[k] = v
	}
	if !fn(&next) {
		return false, nil
	}
	if err := writeAtomic(l.path, next); err != nil {
		return false, err
	}
	l.st = next
	return true, nil
}

// writeAtomic writes v as JSON to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory.
func writeAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".ledger-*.json")
	if err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	tmp := f.Name()
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write ledger: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	return nil
}
