package kernel

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// maxVmlinuxSize bounds decompression so a hostile payload cannot exhaust
// memory; real x86-64 vmlinux images are well under 200 MiB.
const maxVmlinuxSize = 1 << 30

// compression identifies a payload format by its leading magic bytes.
type compression int

const (
	compUnknown compression = iota
	compELF
	compGzip
	compXZ
	compZstd
	compBzip2
	compLZMA
	compLZ4Legacy
	compLZO
)

func (c compression) String() string {
	switch c {
	case compELF:
		return "elf"
	case compGzip:
		return "gzip"
	case compXZ:
		return "xz"
	case compZstd:
		return "zstd"
	case compBzip2:
		return "bzip2"
	case compLZMA:
		return "lzma"
	case compLZ4Legacy:
		return "lz4-legacy"
	case compLZO:
		return "lzo"
	}
	return "unknown"
}

const lz4LegacyMagic = 0x184C2102

// lz4LegacyBlockSize is the fixed uncompressed block size of the legacy
// frame format (the kernel's lz4 -l output).
const lz4LegacyBlockSize = 8 << 20

var magics = []struct {
	magic []byte
	comp  compression
}{
	{[]byte{0x7f, 'E', 'L', 'F'}, compELF},
	{[]byte{0x1f, 0x8b}, compGzip},
	{[]byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, compXZ},
	{[]byte{0x28, 0xb5, 0x2f, 0xfd}, compZstd},
	{[]byte{'B', 'Z', 'h'}, compBzip2},
	// The kernel's lzma payload is the "alone" format with lc=3 lp=0 pb=2
	// (properties byte 0x5d) and a dictionary no larger than 64 MiB, so the
	// first three bytes are stable.
	{[]byte{0x5d, 0x00, 0x00}, compLZMA},
	{[]byte{0x02, 0x21, 0x4c, 0x18}, compLZ4Legacy},
	{[]byte{0x89, 'L', 'Z', 'O'}, compLZO},
}

// detectCompression names the format of b from its magic bytes.
func detectCompression(b []byte) compression {
	for _, m := range magics {
		if bytes.HasPrefix(b, m.magic) {
			return m.comp
		}
	}
	return compUnknown
}

// setupHeader is the part of the x86 boot protocol header needed to find the
// compressed kernel inside a bzImage.
type setupHeader struct {
	SetupSects    int
	Version       uint16
	PayloadOffset uint32
	PayloadLength uint32
}

// protectedModeStart is where the protected-mode kernel (and the offsets of
// the payload fields) begins: after the boot sector and the setup sectors.
func (h setupHeader) protectedModeStart() int { return (h.SetupSects + 1) * 512 }

var errNotBzImage = errors.New("not a bzImage (no x86 boot header)")

// parseSetupHeader reads the x86 boot setup header at its fixed offsets.
func parseSetupHeader(b []byte) (setupHeader, error) {
	var h setupHeader
	if len(b) < 0x250 {
		return h, errNotBzImage
	}
	if binary.LittleEndian.Uint16(b[0x1fe:]) != 0xaa55 || string(b[0x202:0x206]) != "HdrS" {
		return h, errNotBzImage
	}
	h.SetupSects = int(b[0x1f1])
	if h.SetupSects == 0 {
		// Boot protocol: a zero count means the historical default of 4.
		h.SetupSects = 4
	}
	h.Version = binary.LittleEndian.Uint16(b[0x206:])
	if h.Version < 0x208 {
		return h, fmt.Errorf("boot protocol %d.%02d too old (need 2.08 for payload fields)", h.Version>>8, h.Version&0xff)
	}
	h.PayloadOffset = binary.LittleEndian.Uint32(b[0x248:])
	h.PayloadLength = binary.LittleEndian.Uint32(b[0x24c:])
	return h, nil
}

// payload returns the compressed kernel that the header points at.
func (h setupHeader) payload(b []byte) ([]byte, error) {
	start := int64(h.protectedModeStart()) + int64(h.PayloadOffset)
	end := start + int64(h.PayloadLength)
	if h.PayloadLength == 0 || end > int64(len(b)) {
		return nil, fmt.Errorf("payload [%d,%d) outside the %d-byte image", start, end, len(b))
	}
	return b[start:end], nil
}

// ExtractVmlinux returns the uncompressed ELF vmlinux contained in img,
// which may be an x86 bzImage or already an ELF (returned unchanged).
func ExtractVmlinux(ctx context.Context, img []byte) ([]byte, error) {
	if detectCompression(img) == compELF {
		if err := checkVmlinuxELF(img); err != nil {
			return nil, err
		}
		return img, nil
	}
	h, err := parseSetupHeader(img)
	if err != nil {
		return nil, err
	}
	payload, err := h.payload(img)
	if err != nil {
		return nil, err
	}
	out, err := decompressPayload(ctx, payload)
	if err != nil {
		return nil, err
	}
	if err := checkVmlinuxELF(out); err != nil {
		return nil, fmt.Errorf("decompressed payload: %w", err)
	}
	return out, nil
}

// decompressPayload decompresses a bzImage payload. For most formats the
// kernel build appends the 4-byte decompressed size after the compressed
// stream, which strict decoders reject as trailing garbage, so both the
// trimmed and the full payload are tried (trimmed first when the trailer
// looks like a plausible size).
func decompressPayload(ctx context.Context, p []byte) ([]byte, error) {
	comp := detectCompression(p)
	switch comp {
	case compUnknown:
		return nil, errors.New("unrecognised payload compression")
	case compLZO:
		return nil, errors.New("lzo-compressed kernels are not supported")
	case compELF:
		return p, nil
	case compLZ4Legacy:
		out, err := decodeLZ4Legacy(ctx, p, maxVmlinuxSize)
		if err != nil {
			return nil, fmt.Errorf("decompress lz4: %w", err)
		}
		return out, nil
	}
	candidates := [][]byte{p}
	if len(p) > 4 {
		trimmed := p[:len(p)-4]
		size := binary.LittleEndian.Uint32(p[len(p)-4:])
		if int64(size) >= int64(len(trimmed)) && size <= maxVmlinuxSize {
			candidates = [][]byte{trimmed, p}
		} else {
			candidates = append(candidates, trimmed)
		}
	}
	var firstErr error
	for _, c := range candidates {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		out, err := decompressStream(comp, c)
		if err == nil {
			return out, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("decompress %s: %w", comp, firstErr)
}

// decompressStream decodes one whole stream of the given format; trailing
// data after the stream is an error for the strict formats.
func decompressStream(comp compression, p []byte) ([]byte, error) {
	var r io.Reader
	switch comp {
	case compGzip:
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		r = zr
	case compXZ:
		return decodeXZ(p, maxVmlinuxSize)
	case compZstd:
		d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxVmlinuxSize), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return d.DecodeAll(p, nil)
	case compBzip2:
		r = bzip2.NewReader(bytes.NewReader(p))
	case compLZMA:
		lr, err := lzma.NewReader(bytes.NewReader(p))
		if err != nil {
			return nil, err
		}
		r = lr
	default:
		return nil, fmt.Errorf("unsupported compression %s", comp)
	}
	return readLimited(r, maxVmlinuxSize)
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("decompressed size exceeds %d bytes", limit)
	}
	return out, nil
}

// decodeXZ handles plain xz streams with the library and falls back to the
// local decoder for the x86 BCJ filter chain that kernel builds use.
func decodeXZ(p []byte, limit int64) ([]byte, error) {
	xr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(p))
	if err == nil {
		out, rerr := readLimited(xr, limit)
		if rerr == nil {
			return out, nil
		}
		err = rerr
	}
	out, err2 := decodeXZBCJ(p, limit)
	if err2 == nil {
		return out, nil
	}
	if errors.Is(err2, errXZNotBCJ) {
		return nil, err
	}
	return nil, err2
}

// decodeLZ4Legacy decodes the LZ4 legacy frame: a magic number followed by
// blocks, each prefixed with its 4-byte little-endian compressed size. The
// frame has no end marker; it ends at the end of the input, at a repeated
// magic (the start of a concatenated frame, which is decoded too), or at the
// kernel's trailing 4-byte decompressed size, which reads as a block size
// larger than what is left.
func decodeLZ4Legacy(ctx context.Context, src []byte, limit int64) ([]byte, error) {
	if len(src) < 4 || binary.LittleEndian.Uint32(src) != lz4LegacyMagic {
		return nil, errors.New("missing lz4 legacy magic")
	}
	var out []byte
	if len(src) >= 8 {
		hint := binary.LittleEndian.Uint32(src[len(src)-4:])
		if int64(hint) >= int64(len(src)) && int64(hint) <= limit {
			out = make([]byte, 0, hint)
		}
	}
	buf := make([]byte, lz4LegacyBlockSize)
	maxBlock := lz4.CompressBlockBound(lz4LegacyBlockSize)
	blocks := 0
	pos := 4
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rest := len(src) - pos
		if rest < 4 {
			break
		}
		n := int(binary.LittleEndian.Uint32(src[pos:]))
		pos += 4
		if uint32(n) == lz4LegacyMagic {
			continue
		}
		if n == 0 {
			break
		}
		if n > len(src)-pos {
			if len(src)-pos == 0 {
				break
			}
			return nil, fmt.Errorf("block %d: size %d exceeds remaining %d bytes", blocks, n, len(src)-pos)
		}
		if n > maxBlock {
			return nil, fmt.Errorf("block %d: size %d exceeds lz4 bound", blocks, n)
		}
		k, err := lz4.UncompressBlock(src[pos:pos+n], buf)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", blocks, err)
		}
		if int64(len(out))+int64(k) > limit {
			return nil, fmt.Errorf("decompressed size exceeds %d bytes", limit)
		}
		out = append(out, buf[:k]...)
		pos += n
		blocks++
	}
	if blocks == 0 {
		return nil, errors.New("no lz4 blocks")
	}
	return out, nil
}

// checkVmlinuxELF verifies that b is something a VMM can load as a kernel:
// an ELF64 x86-64 executable.
func checkVmlinuxELF(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("ELF class %s, want ELFCLASS64", f.Class)
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("ELF machine %s, want EM_X86_64", f.Machine)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("ELF type %s, want ET_EXEC", f.Type)
	}
	return nil
}

// kernelVersionFromImage finds the release in the linux_banner string
// ("Linux version 6.1.0-56-cloud-amd64 (...)"), which is stored uncompressed
// in a vmlinux. It returns "" when there is none.
func kernelVersionFromImage(b []byte) string {
	const marker = "Linux version "
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(marker))
		if i < 0 {
			return ""
		}
		start := off + i + len(marker)
		off = start
		if start >= len(b) || b[start] < '0' || b[start] > '9' {
			continue
		}
		end := start
		for end < len(b) && end-start < 128 && isVersionByte(b[end]) {
			end++
		}
		if end < len(b) && b[end] == ' ' {
			return string(b[start:end])
		}
	}
}

func isVersionByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_' || c == '+' || c == '~'
}
