package dmsnap

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJournalRoundTripAndFormat(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir)
	if err != nil || len(j.entries) != 0 {
		t.Fatalf("empty journal: %+v, %v", j, err)
	}
	e := Entry{ID: "vm1", Name: "banger-vm1", UUID: "banger-dmsnap-vm1-00", State: StateCreating,
		Base: File{Path: "/r/base.img", Dev: 1, Ino: 2}, COW: File{Path: "/r/vm1.cow", Dev: 1, Ino: 3}, Sectors: 128, ChunkSectors: 8}
	if err := j.set(e); err != nil {
		t.Fatal(err)
	}
	e.BaseLoop = LoopRef{Path: "/dev/loop0", Major: 7}
	if err := j.set(e); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, JournalFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["version"] != float64(1) {
		t.Errorf("version = %v", doc["version"])
	}
	vm := doc["devices"].(map[string]any)["vm1"].(map[string]any)
	if vm["state"] != "creating" || vm["uuid"] != "banger-dmsnap-vm1-00" || vm["base_loop"].(map[string]any)["path"] != "/dev/loop0" {
		t.Errorf("entry = %v", vm)
	}
	if _, ok := vm["cow_loop"]; ok {
		t.Error("an unset loop was written")
	}
	if st, _ := os.Stat(filepath.Join(dir, JournalFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}

	j2, err := openJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := j2.entries["vm1"]
	if got.BaseLoop != e.BaseLoop || got.State != StateCreating || got.COW != e.COW || got.UpdatedAt.IsZero() {
		t.Errorf("reloaded %+v", got)
	}
	if err := j2.drop("vm1"); err != nil {
		t.Fatal(err)
	}
	if err := j2.drop("vm1"); err != nil {
		t.Fatal(err)
	}
	j3, _ := openJournal(dir)
	if len(j3.entries) != 0 {
		t.Errorf("dropped entry came back: %+v", j3.entries)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %v, want only the journal", ents)
	}
}

func TestJournalRefusesWhatItCannotTrust(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":       "{",
		"version":       `{"version":2,"devices":{}}`,
		"unknown field": `{"version":1,"devices":{},"extra":1}`,
		"mismatched id": `{"version":1,"devices":{"vm1":{"id":"vm2"}}}`,
		"bad id":        `{"version":1,"devices":{"a/b":{"id":"a/b"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, JournalFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := openJournal(dir); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	dir := t.TempDir()
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, JournalFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := openJournal(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlinked journal: %v", err)
	}
}
