package namegen

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"dev-box-1", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{"a-", false},
		{"A", false},
		{"a_b", false},
		{"a.b", false},
		{"a b", false},
		{"ä", false},
		{"--x", false},
	} {
		err := Validate(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestGenerateAvoidsTaken(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		n := Generate(func(s string) bool { return seen[s] })
		if err := Validate(n); err != nil {
			t.Fatalf("generated invalid name %q: %v", n, err)
		}
		if seen[n] {
			t.Fatalf("generated taken name %q", n)
		}
		seen[n] = true
	}
}
