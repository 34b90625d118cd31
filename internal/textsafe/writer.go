package textsafe

import (
	"io"
	"unicode/utf8"
)

// Bounds on a sequence being dropped: past them the filter gives up on it
// and prints what follows, so an unterminated sequence cannot hide the rest
// of a log.
const (
	maxControlSeq = 64   // CSI and ESC sequences are a few bytes long
	maxStringSeq  = 4096 // OSC, DCS, SOS, PM, APC strings (titles, hyperlinks)
)

type seqState uint8

const (
	stGround    seqState = iota
	stEsc                // after ESC
	stEscInter           // ESC followed by intermediate bytes
	stCSI                // control sequence: parameters and intermediates
	stString             // OSC/DCS/SOS/PM/APC body, up to BEL or ST
	stStringEsc          // ESC inside a string: ST if a backslash follows
)

// Writer passes a stream of terminal output to an underlying writer as
// printable text: escape sequences (7-bit and 8-bit CSI, OSC, DCS, SOS, PM,
// APC and two-byte ESC sequences) are dropped whole, carriage returns are
// dropped (a serial console ends lines with CRLF, and a lone CR would let
// one line overwrite another), newlines and tabs are kept, and every other
// control character, bidi control and invalid UTF-8 byte is escaped as in
// Line. It holds at most three bytes between writes (a rune split across
// them); Close writes those out.
type Writer struct {
	w     io.Writer
	state seqState
	n     int     // bytes of the current sequence
	pend  [4]byte // an incomplete rune from the last Write
	npend int
	out   []byte
}

// NewWriter returns a Writer that writes the filtered stream to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write filters p. It reports len(p) when the filtered text was written.
func (w *Writer) Write(p []byte) (int, error) {
	w.out = w.out[:0]
	in := p
	if w.npend > 0 {
		// Runes that start in the held bytes, completed from p's first
		// bytes; at most four more are ever needed.
		var tmp [8]byte
		held := copy(tmp[:], w.pend[:w.npend])
		buf := tmp[:held+copy(tmp[held:], p)]
		i := 0
		for i < held {
			if !utf8.FullRune(buf[i:]) {
				// p was too short to complete it: hold on.
				w.npend = copy(w.pend[:], buf[i:])
				return len(p), w.flush()
			}
			r, size := utf8.DecodeRune(buf[i:])
			w.rune(r, size, buf[i])
			i += size
		}
		in = p[i-held:]
		w.npend = 0
	}
	for i := 0; i < len(in); {
		if !utf8.FullRune(in[i:]) {
			w.npend = copy(w.pend[:], in[i:])
			break
		}
		r, size := utf8.DecodeRune(in[i:])
		w.rune(r, size, in[i])
		i += size
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *Writer) flush() error {
	if len(w.out) == 0 {
		return nil
	}
	_, err := w.w.Write(w.out)
	return err
}

// Close writes out a rune left incomplete by the last Write, escaped. It
// does not close the underlying writer.
func (w *Writer) Close() error {
	w.out = w.out[:0]
	if w.state == stGround {
		for _, b := range w.pend[:w.npend] {
			w.out = appendByteEscape(w.out, b)
		}
	}
	w.npend = 0
	return w.flush()
}

// rune feeds one decoded rune (or, for an invalid byte, RuneError with
// size 1 and the byte in b) through the sequence filter.
func (w *Writer) rune(r rune, size int, b byte) {
	if r == utf8.RuneError && size == 1 {
		// A raw byte from 0x80 to 0x9f is an 8-bit control to a
		// terminal that is not in UTF-8 mode: treat it as one.
		if b >= 0x80 && b <= 0x9f {
			r = rune(b)
		} else {
			r = -1
		}
	}
	switch w.state {
	case stEsc:
		w.n++
		switch {
		case r == '[':
			w.state = stCSI
			return
		case r == ']' || r == 'P' || r == 'X' || r == '^' || r == '_':
			w.state, w.n = stString, 0
			return
		case r >= 0x20 && r <= 0x2f:
			w.state = stEscInter
			return
		case r >= 0x30 && r <= 0x7e:
			w.state = stGround
			return
		}
		// Not a sequence: drop the ESC, take r as it comes.
		w.state = stGround
	case stEscInter:
		w.n++
		switch {
		case r >= 0x20 && r <= 0x2f && w.n < maxControlSeq:
			return
		case r >= 0x30 && r <= 0x7e:
			w.state = stGround
			return
		}
		w.state = stGround
	case stCSI:
		w.n++
		switch {
		case r >= 0x20 && r <= 0x3f && w.n < maxControlSeq:
			return
		case r >= 0x40 && r <= 0x7e:
			w.state = stGround
			return
		}
		w.state = stGround
	case stString:
		w.n++
		switch {
		case r == 0x07 || r == 0x9c:
			w.state = stGround
			return
		case r == 0x1b:
			w.state = stStringEsc
			return
		case r != '\n' && w.n < maxStringSeq:
			return
		}
		w.state = stGround
	case stStringEsc:
		w.n++
		if r == '\\' {
			w.state = stGround
			return
		}
		// An ESC that is not ST ends the string and starts afresh.
		w.state = stEsc
		w.rune(r, size, b)
		return
	}
	w.ground(r, size, b)
}

func (w *Writer) ground(r rune, size int, b byte) {
	switch {
	case r == 0x1b:
		w.state, w.n = stEsc, 0
	case r == 0x9b:
		w.state, w.n = stCSI, 0
	case r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f:
		w.state, w.n = stString, 0
	case r == '\r':
	case r == '\n' || r == '\t':
		w.out = append(w.out, byte(r))
	case r < 0 || (size == 1 && b >= 0x80):
		// An invalid byte, or a raw 8-bit control that starts nothing.
		w.out = appendByteEscape(w.out, b)
	case unsafeRune(r):
		w.out = appendRuneEscape(w.out, r)
	default:
		w.out = utf8.AppendRune(w.out, r)
	}
}
