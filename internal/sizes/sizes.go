// Package sizes parses and prints byte sizes the way banger's flags and
// config take them: "512M", "8G", "1073741824". Units are binary (1K = 1024).
package sizes

import (
	"fmt"
	"strconv"
	"strings"
)

const maxSize = int64(1) << 50 // 1 PiB: larger is surely a typo

// Parse turns "8G", "512M", "100K", "2T" or plain bytes into bytes.
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	mult := int64(1)
	upper := strings.ToUpper(t)
	upper = strings.TrimSuffix(upper, "IB")
	upper = strings.TrimSuffix(upper, "B")
	if upper != "" {
		switch upper[len(upper)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			upper = upper[:len(upper)-1]
		}
	}
	n, err := strconv.ParseInt(upper, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a whole number with an optional K, M, G or T suffix", s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("size %q: must be greater than zero", s)
	}
	if n > maxSize/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// Format prints n in the largest whole binary unit.
func Format(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	if n >= 1<<20 {
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	}
	return strconv.FormatInt(n, 10)
}
