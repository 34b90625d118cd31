package vm

import (
	"strings"
	"testing"
)

// TestPinnedSubnet: the helper's pinned subnet wins over the owner's
// config, which is named when it differs.
func TestPinnedSubnet(t *testing.T) {
	for _, tc := range []struct {
		configured, pinned, use string
		note                    bool
	}{
		{"172.16.0.0/24", "172.16.0.0/24", "172.16.0.0/24", false},
		{"172.16.0.9/24", "172.16.0.0/24", "172.16.0.0/24", false}, // same network
		{"192.168.1.0/24", "172.16.0.0/24", "172.16.0.0/24", true},
		{"172.16.0.0/16", "172.16.0.0/24", "172.16.0.0/24", true},
		{"10.1.0.0/24", "", "10.1.0.0/24", false}, // a helper that pins nothing
	} {
		use, note := PinnedSubnet(tc.configured, tc.pinned)
		if use != tc.use || (note != "") != tc.note {
			t.Errorf("PinnedSubnet(%q, %q) = %q, %q; want %q, note %v", tc.configured, tc.pinned, use, note, tc.use, tc.note)
		}
		if tc.note && (!strings.Contains(note, tc.configured) || !strings.Contains(note, "using "+tc.pinned)) {
			t.Errorf("note %q names neither %s nor the subnet used", note, tc.configured)
		}
	}
}
