package dmsnap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"time"

	"banger/internal/atomicfile"
)

// JournalFile is the journal's name inside the state directory.
const JournalFile = "dmsnap.json"

const journalVersion = 1

// State is where a device is in its life. Create goes creating → active,
// Remove active → removing → (entry dropped); faulty marks a device a
// crash or a failed undo left half-made, whose teardown is pending.
type State string

// The states of a journal entry.
const (
	StateCreating State = "creating"
	StateActive   State = "active"
	StateRemoving State = "removing"
	StateFaulty   State = "faulty"
)

// LoopRef is a loop device an entry uses.
type LoopRef struct {
	Path  string `json:"path"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
}

// DMRef is the dm device of an active entry.
type DMRef struct {
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	Path  string `json:"path,omitempty"`
}

// Entry is the journal's record of one VM's snapshot. Everything needed
// to tear it down (name, uuid, files, loops) is written before the step
// that makes it, so a crash at any point leaves an entry that says what
// may exist.
type Entry struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
	State State  `json:"state"`
	Base  File   `json:"base"`
	COW   File   `json:"cow"`
	// Sectors is the origin's (and the snapshot's) length.
	Sectors      uint64    `json:"sectors"`
	ChunkSectors uint32    `json:"chunk_sectors"`
	BaseLoop     LoopRef   `json:"base_loop,omitzero"`
	COWLoop      LoopRef   `json:"cow_loop,omitzero"`
	DM           DMRef     `json:"dm,omitzero"`
	Error        string    `json:"error,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

type journalFile struct {
	Version int              `json:"version"`
	Devices map[string]Entry `json:"devices"`
}

// journal is the on-disk record, replaced atomically (temporary file,
// fsync, rename, directory fsync) on every change. Callers serialise
// access.
type journal struct {
	path    string
	entries map[string]Entry
}

// openJournal loads dir's journal or starts an empty one. A journal that is
// not a regular file, does not parse or has another version is an error:
// forgetting what was made would leak it.
func openJournal(dir string) (*journal, error) {
	j := &journal{path: filepath.Join(dir, JournalFile), entries: map[string]Entry{}}
	fi, err := os.Lstat(j.path)
	if errors.Is(err, fs.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open journal: %s is not a regular file", j.path)
	}
	data, err := os.ReadFile(j.path)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	var jf journalFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&jf); err != nil {
		return nil, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	if jf.Version != journalVersion {
		return nil, fmt.Errorf("open journal %s: version %d, want %d", j.path, jf.Version, journalVersion)
	}
	for id, e := range jf.Devices {
		if e.ID != id || ValidateID(id) != nil {
			return nil, fmt.Errorf("open journal %s: bad entry %q", j.path, id)
		}
		j.entries[id] = e
	}
	return j, nil
}

// set records e, replacing any entry with its id.
func (j *journal) set(e Entry) error {
	e.UpdatedAt = time.Now().UTC()
	next := maps.Clone(j.entries)
	next[e.ID] = e
	return j.commit(next)
}

// drop forgets id.
func (j *journal) drop(id string) error {
	if _, ok := j.entries[id]; !ok {
		return nil
	}
	next := maps.Clone(j.entries)
	delete(next, id)
	return j.commit(next)
}

// commit writes next, then makes it current: if the write fails, memory
// still matches the disk.
func (j *journal) commit(next map[string]Entry) error {
	data, err := json.MarshalIndent(journalFile{Version: journalVersion, Devices: next}, "", "  ")
	if err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	if err := atomicfile.Write(j.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	j.entries = next
	return nil
}
