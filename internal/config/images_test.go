package config

import (
	"strings"
	"testing"
)

func TestImageMaxUnpacked(t *testing.T) {
	c, err := Parse("t", []byte(`image_max_unpacked = "20G"`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.MaxUnpackedBytes(); got != 20<<30 {
		t.Errorf("MaxUnpackedBytes = %d, want 20 GiB", got)
	}
	if c, err := Parse("t", nil); err != nil || c.MaxUnpackedBytes() != 0 {
		t.Errorf("unset: %d, %v; want 0 (the image package's default)", c.MaxUnpackedBytes(), err)
	}
	for _, bad := range []string{`"0"`, `"lots"`, `"-1G"`} {
		if _, err := Parse("t", []byte("image_max_unpacked = "+bad)); err == nil || !strings.Contains(err.Error(), "image_max_unpacked") {
			t.Errorf("image_max_unpacked = %s: error %v", bad, err)
		}
	}
}
