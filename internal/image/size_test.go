package image

import "testing"

func TestParseSize(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"8G", 8 << 30, false},
		{"512M", 512 << 20, false},
		{"100K", 100 << 10, false},
		{"2T", 2 << 40, false},
		{"1073741824", 1 << 30, false},
		{"8g", 8 << 30, false},
		{"8GiB", 8 << 30, false},
		{" 4G ", 4 << 30, false},
		{"0", 0, true},
		{"0G", 0, true},
		{"-1G", 0, true},
		{"", 0, true},
		{"G", 0, true},
		{"eight", 0, true},
		{"1.5G", 0, true},
		{"8X", 0, true},
		{"99999999999T", 0, true},
	}
	for _, c := range cases {
		got, err := ParseSize(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, err %v", c.in, got, err, c.want, c.wantErr)
		}
	}
}
