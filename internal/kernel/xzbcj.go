package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ulikunitz/xz/lzma"
)

// The xz library only implements the LZMA2 filter, but kernel builds compress
// with "xz --x86" (an x86 branch-converter filter in front of LZMA2), so this
// file decodes that one container shape: blocks whose filter chain is
// [x86 BCJ, LZMA2] or [LZMA2]. Integrity checks are not verified here; the
// result is validated as an ELF by the caller.

var errXZNotBCJ = errors.New("xz stream does not use the x86 filter")

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

func decodeXZBCJ(p []byte, limit int64) ([]byte, error) {
	if len(p) < 12 || !bytes.HasPrefix(p, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}) {
		return nil, errors.New("missing xz magic")
	}
	checkSize, err := xzCheckSize(p[7] & 0x0f)
	if err != nil {
		return nil, err
	}
	pos := 12
	var out []byte
	sawBCJ := false
	for {
		if pos >= len(p) {
			return nil, errors.New("xz stream truncated before index")
		}
		if p[pos] == 0 {
			break // index indicator: no more blocks
		}
		hdrSize := (int(p[pos]) + 1) * 4
		if pos+hdrSize > len(p) {
			return nil, errors.New("xz block header truncated")
		}
		hdr := p[pos : pos+hdrSize]
		filters, err := parseXZBlockHeader(hdr)
		if err != nil {
			return nil, err
		}
		pos += hdrSize
		var bcjStart uint32
		useBCJ := false
		switch {
		case len(filters) == 2 && filters[0].id == xzFilterX86 && filters[1].id == xzFilterLZMA2:
			useBCJ = true
			if len(filters[0].props) == 4 {
				bcjStart = binary.LittleEndian.Uint32(filters[0].props)
			} else if len(filters[0].props) != 0 {
				return nil, errors.New("bad x86 filter properties")
			}
		case len(filters) == 1 && filters[0].id == xzFilterLZMA2:
		default:
			return nil, errors.New("unsupported xz filter chain")
		}
		lz := filters[len(filters)-1]
		if len(lz.props) != 1 || lz.props[0] > 40 {
			return nil, errors.New("bad lzma2 properties")
		}
		end, err := lzma2StreamEnd(p[pos:])
		if err != nil {
			return nil, err
		}
		r, err := lzma.Reader2Config{DictCap: lzma2DictSize(lz.props[0])}.NewReader2(bytes.NewReader(p[pos : pos+end]))
		if err != nil {
			return nil, err
		}
		block, err := readLimited(r, limit-int64(len(out)))
		if err != nil {
			return nil, err
		}
		if useBCJ {
			sawBCJ = true
			x86BCJ(block, bcjStart, false)
		}
		out = append(out, block...)
		pos += end
		for pos%4 != 0 {
			pos++
		}
		pos += checkSize
	}
	if !sawBCJ {
		return nil, errXZNotBCJ
	}
	return out, nil
}

func xzCheckSize(id byte) (int, error) {
	switch id {
	case 0x00:
		return 0, nil
	case 0x01:
		return 4, nil
	case 0x04:
		return 8, nil
	case 0x0a:
		return 32, nil
	}
	return 0, fmt.Errorf("unsupported xz check type %#x", id)
}

type xzFilter struct {
	id    uint64
	props []byte
}

func parseXZBlockHeader(h []byte) ([]xzFilter, error) {
	body := h[:len(h)-4] // trailing CRC32
	if len(body) < 2 {
		return nil, errors.New("xz block header too short")
	}
	flags := body[1]
	if flags&0x3c != 0 {
		return nil, errors.New("xz block header has reserved flags")
	}
	pos := 2
	readVLI := func() (uint64, error) {
		var v uint64
		for i := 0; i < 9; i++ {
			if pos >= len(body) {
				return 0, errors.New("xz block header truncated")
			}
			b := body[pos]
			pos++
			v |= uint64(b&0x7f) << (7 * i)
			if b&0x80 == 0 {
				return v, nil
			}
		}
		return 0, errors.New("xz integer too long")
	}
	if flags&0x40 != 0 {
		if _, err := readVLI(); err != nil {
			return nil, err
		}
	}
	if flags&0x80 != 0 {
		if _, err := readVLI(); err != nil {
			return nil, err
		}
	}
	n := int(flags&0x03) + 1
	filters := make([]xzFilter, 0, n)
	for i := 0; i < n; i++ {
		id, err := readVLI()
		if err != nil {
			return nil, err
		}
		size, err := readVLI()
		if err != nil {
			return nil, err
		}
		if size > uint64(len(body)-pos) {
			return nil, errors.New("xz filter properties truncated")
		}
		filters = append(filters, xzFilter{id: id, props: body[pos : pos+int(size)]})
		pos += int(size)
	}
	return filters, nil
}

// lzma2DictSize decodes the one-byte LZMA2 dictionary size property.
func lzma2DictSize(b byte) int {
	if b == 40 {
		return 0xffffffff >> 1 // capped; the decoder only needs an upper bound
	}
	return (2 | int(b&1)) << (b/2 + 11)
}

// lzma2StreamEnd walks LZMA2 chunk headers to find the length of the raw
// LZMA2 stream including its end marker, so the block's padding and check
// can be skipped without trusting the decoder's read-ahead.
func lzma2StreamEnd(p []byte) (int, error) {
	pos := 0
	for {
		if pos >= len(p) {
			return 0, errors.New("lzma2 stream truncated")
		}
		c := p[pos]
		switch {
		case c == 0x00:
			return pos + 1, nil
		case c == 0x01 || c == 0x02:
			if pos+3 > len(p) {
				return 0, errors.New("lzma2 chunk header truncated")
			}
			pos += 3 + int(binary.BigEndian.Uint16(p[pos+1:])) + 1
		case c >= 0x80:
			hdr := 5
			if c >= 0xc0 {
				hdr = 6 // properties byte follows on state resets with new props
			}
			if pos+hdr > len(p) {
				return 0, errors.New("lzma2 chunk header truncated")
			}
			pos += hdr + int(binary.BigEndian.Uint16(p[pos+3:])) + 1
		default:
			return 0, fmt.Errorf("invalid lzma2 control byte %#x", c)
		}
	}
}

// x86BCJ applies (encode=true) or reverts the x86 branch converter in place.
// The encoder rewrites the rel32 operand of E8/E9 (CALL/JMP) instructions to
// an absolute address so that repeated calls to one function compress well;
// a small history mask of recently seen E8/E9 bytes decides which candidates
// were converted, and must be tracked identically in both directions.
func x86BCJ(buf []byte, startPos uint32, encode bool) {
	if len(buf) < 5 {
		return
	}
	isMSB := func(b byte) bool { return b == 0x00 || b == 0xff }
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}

	var mask uint32
	prevPos := startPos - 5 // uint32 arithmetic wraps like the reference format
	for i := 0; i+5 <= len(buf); {
		op := buf[i]
		if op != 0xe8 && op != 0xe9 {
			i++
			continue
		}
		here := startPos + uint32(i)
		dist := here - prevPos
		prevPos = here
		if dist > 5 {
			mask = 0
		} else {
			for k := uint32(0); k < dist; k++ {
				mask = (mask & 0x77) << 1
			}
		}
		hi := buf[i+4]
		if isMSB(hi) && allowed[(mask>>1)&7] && (mask>>1) < 0x10 {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				if encode {
					dest = src + (here + 5)
				} else {
					dest = src - (here + 5)
				}
				if mask == 0 {
					break
				}
				shift := bitNum[mask>>1] * 8
				if !isMSB(byte(dest >> (24 - shift))) {
					break
				}
				src = dest ^ (1<<(32-shift) - 1)
			}
			// Sign-extend from bit 24 so the operand keeps a 0x00/0xff top byte.
			dest &= 0x01ffffff
			if dest&0x01000000 != 0 {
				dest |= 0xff000000
			}
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 5
			mask = 0
		} else {
			i++
			mask |= 1
			if isMSB(hi) {
				mask |= 0x10
			}
		}
	}
}
