package textsafe

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzWriter: whatever a console sends, the filtered stream is valid UTF-8
// with no control character but newline and tab, and does not depend on
// how the stream was split into writes.
func FuzzWriter(f *testing.F) {
	for _, s := range []string{
		"[\x1b[0;32m  OK  \x1b[0m] Started\r\n",
		"\x1b]0;title\x07\x1b]8;;u\x1b\\l\x1b]8;;\x1b\\",
		"\u009b2J\x9b2J\x9d0;t\x9c\u202e",
		"\xe2\x82\x1b[\xf0\x9f\x98",
	} {
		f.Add([]byte(s), uint(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint) {
		var one, two bytes.Buffer
		w := NewWriter(&one)
		_, _ = w.Write(in)
		_ = w.Close()
		c := int(cut % uint(len(in)+1))
		w = NewWriter(&two)
		_, _ = w.Write(in[:c])
		_, _ = w.Write(in[c:])
		_ = w.Close()
		if !bytes.Equal(one.Bytes(), two.Bytes()) {
			t.Fatalf("split at %d changes the output: %q vs %q", c, one.Bytes(), two.Bytes())
		}
		out := one.String()
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8 out: %q", out)
		}
		for _, r := range out {
			if unsafeRune(r) && r != '\n' && r != '\t' {
				t.Fatalf("%U got through: %q", r, out)
			}
		}
		for _, s := range []string{Line(string(in)), Text(string(in))} {
			for _, r := range s {
				if unsafeRune(r) && r != '\n' && r != '\t' {
					t.Fatalf("%U got through Line/Text: %q", r, s)
				}
			}
		}
	})
}
