// Package mountinfo reads the mount table (/proc/self/mountinfo) for the
// code that must never descend into, or leave behind, a live mount:
// jail teardown, build-tree removal and image staging cleanup.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Under lists the mount points at or below dir in this process's mount
// namespace, deepest first (then latest mounted first), so that detaching
// them in order always detaches a child before its parent. A path mounted
// over twice is listed twice: each detach takes one.
func Under(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return Parse(f, dir)
}

// Below is Under without dir itself.
func Below(dir string) ([]string, error) {
	all, err := Under(dir)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(mp string) bool { return mp == dir }), nil
}

// Parse is Under over the mountinfo table read from r.
func Parse(r io.Reader, dir string) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := Unescape(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, nil
}

// Unescape undoes the kernel's octal escapes (\040 for a space) in a
// mountinfo path.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
