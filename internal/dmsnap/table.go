package dmsnap

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// maxTargetType is DM_MAX_TYPE_NAME minus its terminating NUL.
const maxTargetType = 15

// Target is one line of a dm table: Length sectors from Start mapped by the
// target Type with its Params.
type Target struct {
	Start  uint64
	Length uint64
	Type   string
	Params string
}

// String renders the target as a dmsetup table line.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Validate checks what the kernel and dmsetup would otherwise reject late:
// a non-empty length, a type that fits the ioctl field, and parameters on
// one line without NUL (the ioctl carries them as a C string, dmsetup one
// line per target).
func (t Target) Validate() error {
	if t.Length == 0 {
		return fmt.Errorf("dm target %q: zero length", t.Type)
	}
	if t.Type == "" || len(t.Type) > maxTargetType || strings.ContainsFunc(t.Type, notTableWord) {
		return fmt.Errorf("dm target type %q: want 1-%d characters without spaces", t.Type, maxTargetType)
	}
	if strings.ContainsAny(t.Params, "\x00\n\r") {
		return fmt.Errorf("dm target %s: parameters hold a NUL or a line break", t.Type)
	}
	return nil
}

// FormatTable renders a table as dmsetup reads it, one target a line.
func FormatTable(ts []Target) string {
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// ParseTarget parses one table line ("0 16384 snapshot 7:0 7:1 P 8").
func ParseTarget(line string) (Target, error) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return Target{}, fmt.Errorf("parse dm table line %q: want start, length and type", line)
	}
	start, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return Target{}, fmt.Errorf("parse dm table line %q: start: %w", line, err)
	}
	length, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return Target{}, fmt.Errorf("parse dm table line %q: length: %w", line, err)
	}
	t := Target{Start: start, Length: length, Type: f[2], Params: strings.Join(f[3:], " ")}
	if err := t.Validate(); err != nil {
		return Target{}, fmt.Errorf("parse dm table line %q: %w", line, err)
	}
	return t, nil
}

func notTableWord(r rune) bool { return r <= ' ' || r == 0x7f }

// checkDevArg checks a device argument of a table: "major:minor" or an
// absolute /dev path, one word. Anything else could shift the parameters
// the kernel reads.
func checkDevArg(what, dev string) error {
	if dev == "" || strings.ContainsFunc(dev, notTableWord) {
		return fmt.Errorf("%s device %q: want major:minor or a /dev path without spaces", what, dev)
	}
	if strings.HasPrefix(dev, "/dev/") {
		return nil
	}
	maj, mnr, ok := strings.Cut(dev, ":")
	if !ok || !isDecimal(maj) || !isDecimal(mnr) {
		return fmt.Errorf("%s device %q: want major:minor or a /dev path", what, dev)
	}
	return nil
}

func isDecimal(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// SnapshotTarget builds the persistent snapshot target over the whole
// origin: `0 <sectors> snapshot <origin> <cow> P <chunk>`. Persistent (P)
// keeps the exception table in the COW device, so a snapshot can be
// activated again from the same COW file after its device was removed or
// the host rebooted. The chunk size must be a power of two of at least 8
// sectors (4 KiB: no device below a 4 KiB logical block) and at most 2048
// (1 MiB).
func SnapshotTarget(sectors uint64, origin, cow string, chunkSectors uint32) (Target, error) {
	if sectors == 0 {
		return Target{}, fmt.Errorf("snapshot target: zero-length origin")
	}
	if err := checkDevArg("origin", origin); err != nil {
		return Target{}, fmt.Errorf("snapshot target: %w", err)
	}
	if err := checkDevArg("cow", cow); err != nil {
		return Target{}, fmt.Errorf("snapshot target: %w", err)
	}
	if origin == cow {
		return Target{}, fmt.Errorf("snapshot target: origin and cow are the same device %s", origin)
	}
	if err := checkChunk(chunkSectors); err != nil {
		return Target{}, fmt.Errorf("snapshot target: %w", err)
	}
	return Target{Start: 0, Length: sectors, Type: "snapshot",
		Params: fmt.Sprintf("%s %s P %d", origin, cow, chunkSectors)}, nil
}

func checkChunk(chunkSectors uint32) error {
	if chunkSectors < 8 || chunkSectors > 2048 || bits.OnesCount32(chunkSectors) != 1 {
		return fmt.Errorf("chunk size %d sectors: want a power of two from 8 to 2048", chunkSectors)
	}
	return nil
}

// ThinPoolTarget builds a thin-pool target (not used by Manager yet: it is
// the shape a later pool-backed store would take). blockSectors must be a
// multiple of 128 (64 KiB) from 128 to 2097152 (1 GiB); lowWater is in
// blocks; features are passed as they are (e.g. "skip_block_zeroing").
func ThinPoolTarget(sectors uint64, metaDev, dataDev string, blockSectors uint32, lowWater uint64, features ...string) (Target, error) {
	if sectors == 0 {
		return Target{}, fmt.Errorf("thin-pool target: zero length")
	}
	if err := checkDevArg("metadata", metaDev); err != nil {
		return Target{}, fmt.Errorf("thin-pool target: %w", err)
	}
	if err := checkDevArg("data", dataDev); err != nil {
		return Target{}, fmt.Errorf("thin-pool target: %w", err)
	}
	if blockSectors < 128 || blockSectors > 2097152 || blockSectors%128 != 0 {
		return Target{}, fmt.Errorf("thin-pool target: block size %d sectors: want a multiple of 128 from 128 to 2097152", blockSectors)
	}
	p := fmt.Sprintf("%s %s %d %d %d", metaDev, dataDev, blockSectors, lowWater, len(features))
	for _, f := range features {
		if f == "" || strings.ContainsFunc(f, notTableWord) {
			return Target{}, fmt.Errorf("thin-pool target: feature %q: want one word", f)
		}
		p += " " + f
	}
	return Target{Start: 0, Length: sectors, Type: "thin-pool", Params: p}, nil
}

// ThinTarget builds a thin target: device devID of pool, sectors long.
// devID is the pool's 24-bit device id.
func ThinTarget(sectors uint64, pool string, devID uint32) (Target, error) {
	if sectors == 0 {
		return Target{}, fmt.Errorf("thin target: zero length")
	}
	if err := checkDevArg("pool", pool); err != nil {
		return Target{}, fmt.Errorf("thin target: %w", err)
	}
	if devID >= 1<<24 {
		return Target{}, fmt.Errorf("thin target: device id %d: want below 2^24", devID)
	}
	return Target{Start: 0, Length: sectors, Type: "thin", Params: fmt.Sprintf("%s %d", pool, devID)}, nil
}

// DevNum renders a device number as a table argument.
func DevNum(major, minor uint32) string {
	return fmt.Sprintf("%d:%d", major, minor)
}
