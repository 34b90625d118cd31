package mountinfo

import (
	"slices"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	const table = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:1 /j/fc/vm-1/root /j/fc/vm-1/root rw,relatime - ext4 /dev/sda1 rw
31 30 8:1 /home/u/rootfs.ext4 /j/fc/vm-1/root/rootfs.ext4 rw,relatime - ext4 /dev/sda1 rw
32 30 8:1 /usr/lib /j/fc/vm-1/root/usr/lib ro,relatime - ext4 /dev/sda1 rw
33 30 8:1 /x /j/fc/vm-1/root/with\040space rw - ext4 /dev/sda1 rw
34 22 8:1 /x /j/fc/vm-10/root rw - ext4 /dev/sda1 rw
35 31 8:1 /y /j/fc/vm-1/root/rootfs.ext4 rw - ext4 /dev/sda1 rw
garbage
`
	got, err := Parse(strings.NewReader(table), "/j/fc/vm-1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		// Deepest first; the file mounted over twice is listed twice,
		// latest mount first.
		"/j/fc/vm-1/root/usr/lib",
		"/j/fc/vm-1/root/rootfs.ext4",
		"/j/fc/vm-1/root/with space",
		"/j/fc/vm-1/root/rootfs.ext4",
		"/j/fc/vm-1/root",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Parse =\n %q\nwant\n %q", got, want)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:            "/plain",
		`/with\040space`:    "/with space",
		`/tab\011and\134bs`: "/tab\tand\\bs",
		`/trailing\04`:      `/trailing\04`,
		`/not\999octal`:     `/not\999octal`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
