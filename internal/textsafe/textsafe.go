// Package textsafe makes text that came from a guest safe to print on the
// owner's terminal. A guest runs whatever it likes as root, so a process
// name, an error message or a console line may carry escape sequences that
// retitle the window, move the cursor, rewrite earlier output, hide text or
// (on some terminals) answer back into the input. Everything here is pure
// and imports only the standard library.
//
// Line and Text neutralise one string: each control character, 8-bit
// control, bidi override and invalid UTF-8 byte becomes a visible escape
// (\x1b, \u009b, \u202e, \xff), so an attempt shows as what it is. Writer
// filters a stream (a console log): whole escape sequences are dropped,
// since a console is full of harmless colour codes, and what is left is
// printable text and newlines. JSON re-escapes what encoding/json leaves
// raw in strings.
package textsafe

import (
	"strconv"
	"unicode/utf8"
)

// Line returns s as printable text on one line: every control character,
// tab and newline included, is escaped.
func Line(s string) string { return clean(s, false) }

// Text returns s as printable text that keeps its newlines and tabs; every
// other control character is escaped.
func Text(s string) string { return clean(s, true) }

func clean(s string, multiline bool) string {
	if isClean(s, multiline) {
		return s
	}
	out := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			out = appendByteEscape(out, s[i])
		case multiline && (r == '\n' || r == '\t'):
			out = append(out, byte(r))
		case unsafeRune(r):
			out = appendRuneEscape(out, r)
		default:
			out = append(out, s[i:i+size]...)
		}
		i += size
	}
	return string(out)
}

// isClean is the fast path: most strings need no change.
func isClean(s string, multiline bool) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= utf8.RuneSelf {
			return cleanUnicode(s[i:])
		}
		if b < 0x20 || b == 0x7f {
			if multiline && (b == '\n' || b == '\t') {
				continue
			}
			return false
		}
	}
	return true
}

func cleanUnicode(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size <= 1) || (unsafeRune(r) && r != '\n' && r != '\t') {
			return false
		}
		i += size
	}
	return true
}

// unsafeRune reports a rune a terminal would act on rather than show: C0
// and C1 controls, DEL, and the bidi controls that reorder what follows.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

var shortEscapes = map[rune]string{'\a': `\a`, '\b': `\b`, '\t': `\t`, '\n': `\n`, '\v': `\v`, '\f': `\f`, '\r': `\r`}

func appendRuneEscape(out []byte, r rune) []byte {
	if e, ok := shortEscapes[r]; ok {
		return append(out, e...)
	}
	if r < 0x80 {
		return appendByteEscape(out, byte(r))
	}
	out = append(out, `\u`...)
	h := strconv.FormatInt(int64(r), 16)
	for i := len(h); i < 4; i++ {
		out = append(out, '0')
	}
	return append(out, h...)
}

func appendByteEscape(out []byte, b byte) []byte {
	const hex = "0123456789abcdef"
	return append(out, '\\', 'x', hex[b>>4], hex[b&0xf])
}

// JSON returns b, a JSON document, with every DEL, C1 control and bidi
// control inside its strings written as a \u escape. encoding/json escapes
// C0 controls and invalid UTF-8 itself but passes these through, and a
// terminal acts on them when the JSON is printed. The document's value is
// unchanged.
func JSON(b []byte) []byte {
	var out []byte
	last := 0
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r >= 0x7f && unsafeRune(r) {
			if out == nil {
				out = make([]byte, 0, len(b)+16)
			}
			out = append(out, b[last:i]...)
			out = append(out, `\u`...)
			h := strconv.FormatInt(int64(r), 16)
			for j := len(h); j < 4; j++ {
				out = append(out, '0')
			}
			out = append(out, h...)
			last = i + size
		}
		i += size
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}
