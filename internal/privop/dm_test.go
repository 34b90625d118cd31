package privop

import (
	"strings"
	"testing"
)

func TestSnapshotOpsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   Op
		want string // "" means valid
	}{
		{"create", CreateSnapshot{VMID: "a1b2"}, ""},
		{"create with chunk", CreateSnapshot{VMID: "a1b2", ChunkSectors: 128}, ""},
		{"chunk too small", CreateSnapshot{VMID: "a1b2", ChunkSectors: 4}, "chunk_sectors 4"},
		{"chunk not a power of two", CreateSnapshot{VMID: "a1b2", ChunkSectors: 24}, "chunk_sectors 24"},
		{"chunk too big", CreateSnapshot{VMID: "a1b2", ChunkSectors: 4096}, "chunk_sectors 4096"},
		{"create path id", CreateSnapshot{VMID: "../x"}, "vm id"},
		{"remove", RemoveSnapshot{VMID: "a1b2"}, ""},
		{"remove empty id", RemoveSnapshot{}, "vm id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	if n := RequestFiles(CreateSnapshot{VMID: "a"}); n != 2 {
		t.Errorf("a create carries %d fds, want 2", n)
	}
	if n := RequestFiles(RemoveSnapshot{VMID: "a"}); n != 0 {
		t.Errorf("a remove carries %d fds, want 0", n)
	}
}
