package sizes

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"1073741824", 1 << 30, ""},
		{"512", 512, ""},
		{"100K", 100 << 10, ""},
		{"512M", 512 << 20, ""},
		{"8G", 8 << 30, ""},
		{"2T", 2 << 40, ""},
		{"8g", 8 << 30, ""},
		{"8GiB", 8 << 30, ""},
		{"8gib", 8 << 30, ""},
		{"64KiB", 64 << 10, ""},
		{"3MB", 3 << 20, ""},
		{"100B", 100, ""},
		{" 4G ", 4 << 30, ""},
		{"1024T", 1 << 50, ""},
		{"", 0, "empty"},
		{"   ", 0, "empty"},
		{"0", 0, "greater than zero"},
		{"0G", 0, "greater than zero"},
		{"-1", 0, "greater than zero"},
		{"-8G", 0, "greater than zero"},
		{"lots", 0, "whole number"},
		{"1.5G", 0, "whole number"},
		{"G", 0, "whole number"},
		{"8X", 0, "whole number"},
		{"8 G", 0, "whole number"},
		{"1025T", 0, "too large"},
		{"99999999999999999999", 0, "whole number"},
		{"9223372036854775807K", 0, "too large"},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{1536, "1536"},
		{512 << 20, "512M"},
		{1 << 30, "1G"},
		{8 << 30, "8G"},
		{2 << 40, "2T"},
		{1536 << 20, "1536M"},
		{(1 << 20) + 1, "1.0M"},
		{(3 << 20) + (1 << 19) + 1, "3.5M"},
	}
	for _, tc := range tests {
		if got := Format(tc.in); got != tc.want {
			t.Errorf("Format(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFormatParseRoundTrip(t *testing.T) {
	for _, n := range []int64{1, 1000, 1 << 10, 3 << 20, 7 << 30, 5 << 40, 1 << 50} {
		back, err := Parse(Format(n))
		if err != nil || back != n {
			t.Errorf("Parse(Format(%d)=%q) = %d, %v", n, Format(n), back, err)
		}
	}
}
