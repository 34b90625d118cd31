package textsafe

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLineAndText(t *testing.T) {
	tests := []struct {
		name, in, line, text string
	}{
		{"plain", "nginx: worker", "nginx: worker", "nginx: worker"},
		{"utf8 kept", "café ☕ 日本", "café ☕ 日本", "café ☕ 日本"},
		{"empty", "", "", ""},
		{"csi colour", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, `\x1b[31mred\x1b[0m`},
		{"osc title", "\x1b]0;pwned\x07x", `\x1b]0;pwned\ax`, `\x1b]0;pwned\ax`},
		{"osc 52 clipboard", "\x1b]52;c;ZWNobyBoaQ==\x1b\\", `\x1b]52;c;ZWNobyBoaQ==\x1b\`, `\x1b]52;c;ZWNobyBoaQ==\x1b\`},
		{"8-bit csi as utf-8", "a\u009b2Jb", `a\u009b2Jb`, `a\u009b2Jb`},
		{"8-bit csi raw byte", "a\x9b2Jb", `a\x9b2Jb`, `a\x9b2Jb`},
		{"del", "a\x7fb", `a\x7fb`, `a\x7fb`},
		{"nul and bell", "a\x00\x07", `a\x00\a`, `a\x00\a`},
		{"backspace overwrite", "rm -rf /\b\b\b\b\b\b\bls", `rm -rf /\b\b\b\b\b\b\bls`, `rm -rf /\b\b\b\b\b\b\bls`},
		{"carriage return", "evil\rgood", `evil\rgood`, `evil\rgood`},
		{"newline and tab", "a\n\tb", `a\n\tb`, "a\n\tb"},
		{"bidi override", "abc\u202edcba", `abc\u202edcba`, `abc\u202edcba`},
		{"bidi isolates and marks", "\u2066x\u2069\u200e\u200f\u061c", `\u2066x\u2069\u200e\u200f\u061c`, `\u2066x\u2069\u200e\u200f\u061c`},
		{"invalid utf-8", "ok\xff\xc3(", `ok\xff\xc3(`, `ok\xff\xc3(`},
		{"truncated rune at end", "ok\xe2\x82", `ok\xe2\x82`, `ok\xe2\x82`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Line(tc.in); got != tc.line {
				t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.line)
			}
			if got := Text(tc.in); got != tc.text {
				t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.text)
			}
		})
	}
}

// Whatever the input, Line leaves nothing a terminal acts on, and Text
// only newlines and tabs.
func TestLineLeavesNoControls(t *testing.T) {
	var all []byte
	for b := 0; b < 256; b++ {
		all = append(all, byte(b))
	}
	for _, r := range []rune{0x85, 0x9b, 0x9d, 0x202a, 0x202e, 0x2067} {
		all = utf8.AppendRune(all, r)
	}
	for _, out := range []string{Line(string(all)), Text(string(all))} {
		if !utf8.ValidString(out) {
			t.Errorf("output is not valid UTF-8: %q", out)
		}
		for _, r := range out {
			if unsafeRune(r) && r != '\n' && r != '\t' {
				t.Errorf("output keeps %U: %q", r, out)
			}
		}
	}
	if strings.ContainsAny(Line(string(all)), "\n\t") {
		t.Error("Line keeps a newline or tab")
	}
}

func TestWriter(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain lines", "a\nb\n", "a\nb\n"},
		{"serial crlf", "[    0.1] booting\r\n[    0.2] ok\r\n", "[    0.1] booting\n[    0.2] ok\n"},
		{"lone cr cannot overwrite", "evil\rgood\n", "evilgood\n"},
		{"systemd colours", "[\x1b[0;32m  OK  \x1b[0m] Started x.\r\n", "[  OK  ] Started x.\n"},
		{"csi with private params", "\x1b[?25l\x1b[?1049hX", "X"},
		{"clear screen and home", "a\x1b[2J\x1b[Hb", "ab"},
		{"osc title bel", "\x1b]0;pwned\x07text", "text"},
		{"osc hyperlink st", "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"},
		{"osc 52 clipboard", "\x1b]52;c;ZWNobyBoaQ==\x07after", "after"},
		{"dcs", "\x1bP1$r0m\x1b\\z", "z"},
		{"apc and pm", "\x1b_hidden\x1b\\\x1b^also\x1b\\shown", "shown"},
		{"two-byte esc", "\x1bcreset \x1b7\x1b8x", "reset x"},
		{"esc with intermediate", "\x1b(Bx\x1b#8y", "xy"},
		{"8-bit csi utf-8", "a\u009b2Jb", "ab"},
		{"8-bit csi raw", "a\x9b2Jb", "ab"},
		{"8-bit osc utf-8 with 8-bit st", "a\u009d0;t\u009cb", "ab"},
		{"8-bit osc raw with raw st", "a\x9d0;t\x9cb", "ab"},
		{"lone raw c1", "a\x85b", `a\x85b`},
		{"lone utf-8 c1", "a\u0085b", `a\u0085b`},
		{"other controls escaped", "a\x00b\x07c\x08d\x7f", `a\x00b\ac\bd\x7f`},
		{"bidi escaped", "x\u202ey", `x\u202ey`},
		{"invalid utf-8 escaped", "x\xffy", `x\xffy`},
		{"utf-8 kept", "café ☕\n", "café ☕\n"},
		{"tab kept", "a\tb", "a\tb"},
		{"esc then newline", "a\x1b\nb", "a\nb"},
		{"csi broken by newline", "a\x1b[12\nb", "a\nb"},
		{"osc ends at newline", "a\x1b]0;title\nshown", "a\nshown"},
		{"unterminated csi is bounded", "\x1b[" + strings.Repeat("1", 100) + "x", strings.Repeat("1", 100-(maxControlSeq-2)) + "x"},
		{"unterminated osc is bounded", "\x1b]" + strings.Repeat("a", maxStringSeq+10), strings.Repeat("a", 11)},
		{"esc esc", "\x1b\x1b[31mx", "x"},
		{"string esc not st", "\x1b]0;t\x1b[31mx", "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Every split of the input into two writes gives the same
			// output as one write: sequences and runes cross writes.
			for cut := 0; cut <= len(tc.in); cut++ {
				var buf bytes.Buffer
				w := NewWriter(&buf)
				for _, part := range []string{tc.in[:cut], tc.in[cut:]} {
					if n, err := w.Write([]byte(part)); err != nil || n != len(part) {
						t.Fatalf("Write(%q) = %d, %v", part, n, err)
					}
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if got := buf.String(); got != tc.want {
					t.Fatalf("split at %d: %q -> %q, want %q", cut, tc.in, got, tc.want)
				}
			}
		})
	}
}

func TestWriterByteAtATime(t *testing.T) {
	in := "x\xe2\x98\x95\x1b[1m\xe6\x97\xa5\x1b[0m\xe2\x82\n\xf0\x9f\x98\x80"
	want := "x☕日\\xe2\\x82\n😀"
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i := 0; i < len(in); i++ {
		if _, err := w.Write([]byte{in[i]}); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Close()
	if got := buf.String(); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestWriterTruncatedRuneAtClose(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	_, _ = w.Write([]byte("end\xe2\x82"))
	if got := buf.String(); got != "end" {
		t.Fatalf("before Close: %q", got)
	}
	_ = w.Close()
	if got := buf.String(); got != `end\xe2\x82` {
		t.Fatalf("after Close: %q", got)
	}
}

func TestJSON(t *testing.T) {
	v := map[string]string{"process": "a\u009b2J\u202eb\x7f", "plain": "é\x1b"}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out := JSON(b)
	for _, r := range string(out) {
		if unsafeRune(r) {
			t.Fatalf("JSON left %U in %s", r, out)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("JSON output does not parse: %v: %s", err, out)
	}
	if back["process"] != v["process"] || back["plain"] != v["plain"] {
		t.Fatalf("JSON changed the value: %q", back)
	}
	clean := []byte(`{"a":"b"}`)
	if got := JSON(clean); string(got) != string(clean) {
		t.Fatalf("JSON(%s) = %s", clean, got)
	}
}
