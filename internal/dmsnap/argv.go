package dmsnap

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// The builders below make the argv of losetup and dmsetup for ExecBackend.
// Every value reaching them is validated first (names, uuids, /dev/loopN,
// clean absolute paths), so nothing can be read as an option, and they are
// only ever run as argv, never through a shell.

var (
	loopDevRE = regexp.MustCompile(`^/dev/loop[0-9]{1,6}$`)
	uuidRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,127}$`)
)

// LosetupColumns are the columns LosetupListArgs asks for, in order.
// BACK-FILE is last and escaped by --raw, so a path with spaces stays one
// field.
const LosetupColumns = "NAME,MAJ:MIN,RO,AUTOCLEAR,BACK-MAJ:MIN,BACK-INO,BACK-FILE"

// checkBackingPath refuses what losetup could misread: a relative or
// unclean path (a leading '-' included), or one with control characters.
func checkBackingPath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" {
		return fmt.Errorf("backing file %q: want a clean absolute path", p)
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("backing file %q: control characters in path", p)
	}
	return nil
}

// CheckLoopDev checks a loop device path: /dev/loopN.
func CheckLoopDev(dev string) error {
	if !loopDevRE.MatchString(dev) {
		return fmt.Errorf("loop device %q: want /dev/loopN", dev)
	}
	return nil
}

// checkDMName accepts banger's dm names only.
func checkDMName(name string) error {
	if _, ok := IDFromName(name); !ok {
		return fmt.Errorf("dm name %q: want %s<id> with an id of 1-64 characters from [A-Za-z0-9-]", name, NamePrefix)
	}
	return nil
}

func checkUUID(uuid string) error {
	if !uuidRE.MatchString(uuid) {
		return fmt.Errorf("dm uuid %q: want 1-128 characters from [A-Za-z0-9-], not starting with -", uuid)
	}
	return nil
}

// LosetupAttachArgs binds file to the first free loop device and prints
// its path: losetup --find --show [--read-only] FILE. (No --nooverlap: it
// would hand back a loop another VM already uses for the same base.)
func LosetupAttachArgs(file string, readOnly bool) ([]string, error) {
	if err := checkBackingPath(file); err != nil {
		return nil, err
	}
	args := []string{"--find", "--show"}
	if readOnly {
		args = append(args, "--read-only")
	}
	return append(args, file), nil
}

// LosetupDetachArgs detaches dev: losetup --detach DEV.
func LosetupDetachArgs(dev string) ([]string, error) {
	if err := CheckLoopDev(dev); err != nil {
		return nil, err
	}
	return []string{"--detach", dev}, nil
}

// LosetupListArgs lists bound loop devices, one raw line each.
func LosetupListArgs() []string {
	return []string{"--list", "--noheadings", "--raw", "--output", LosetupColumns}
}

// ParseLosetupList parses the output of LosetupListArgs.
func ParseLosetupList(out []byte) ([]Loop, error) {
	var loops []Loop
	for line := range strings.Lines(string(out)) {
		line = strings.TrimRight(line, "\n")
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Split(line, " ")
		if len(f) != 7 {
			return nil, fmt.Errorf("parse losetup line %q: want 7 fields, got %d", line, len(f))
		}
		// Numeric columns come padded for alignment, the padding escaped
		// like any space (" \x20\x207:1\x20\x20 "); a loop being set up
		// meanwhile has empty backing columns.
		for i := range f[:6] {
			f[i] = strings.TrimSpace(unescapeRaw(f[i]))
		}
		var l Loop
		l.Path = f[0]
		var err error
		if l.Major, l.Minor, err = parseMajMin(f[1]); err != nil {
			return nil, fmt.Errorf("parse losetup line %q: %w", line, err)
		}
		l.ReadOnly = f[2] == "1"
		l.Autoclear = f[3] == "1"
		if f[4] != "" {
			bmaj, bmin, err := parseMajMin(f[4])
			if err != nil {
				return nil, fmt.Errorf("parse losetup line %q: %w", line, err)
			}
			l.BackingDev = mkdev(bmaj, bmin)
		}
		if f[5] != "" {
			if l.BackingIno, err = strconv.ParseUint(f[5], 10, 64); err != nil {
				return nil, fmt.Errorf("parse losetup line %q: inode: %w", line, err)
			}
		}
		l.Backing, l.Deleted = trimDeleted(unescapeRaw(f[6]))
		loops = append(loops, l)
	}
	return loops, nil
}

// unescapeRaw undoes libsmartcols' raw escaping (\xHH).
func unescapeRaw(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseMajMin(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, 0, fmt.Errorf("device number %q: want major:minor", s)
	}
	maj, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	mnr, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("device number %q: want major:minor", s)
	}
	return uint32(maj), uint32(mnr), nil
}

// mkdev encodes a device number the way stat(2) reports st_dev (and
// LOOP_GET_STATUS64 lo_device), so the two compare.
func mkdev(major, minor uint32) uint64 {
	return uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12 | uint64(major&^0xfff)<<32
}

// DmsetupCreateArgs creates, loads and resumes a device: dmsetup create
// NAME --uuid UUID --table LINE for one target; with several, the table
// goes on stdin (returned non-empty).
func DmsetupCreateArgs(name, uuid string, table []Target) (args []string, stdin string, err error) {
	if err := checkDMName(name); err != nil {
		return nil, "", err
	}
	if err := checkUUID(uuid); err != nil {
		return nil, "", err
	}
	if len(table) == 0 {
		return nil, "", fmt.Errorf("dm device %s: empty table", name)
	}
	for _, t := range table {
		if err := t.Validate(); err != nil {
			return nil, "", err
		}
	}
	args = []string{"create", name, "--uuid", uuid}
	if len(table) == 1 {
		return append(args, "--table", table[0].String()), "", nil
	}
	return args, FormatTable(table), nil
}

// DmsetupRemoveArgs removes the device with uuid: dmsetup remove [--retry]
// --uuid UUID. Manager retries EBUSY itself (bounded, reported), so
// ExecBackend passes retry false.
func DmsetupRemoveArgs(uuid string, retry bool) ([]string, error) {
	if err := checkUUID(uuid); err != nil {
		return nil, err
	}
	args := []string{"remove"}
	if retry {
		args = append(args, "--retry")
	}
	return append(args, "--uuid", uuid), nil
}

// DmsetupInfoColumns are the fields DmsetupInfoArgs asks for, in order.
const DmsetupInfoColumns = "name,uuid,major,minor,open"

// DmsetupInfoArgs describes one device (name non-empty) or all of them, a
// line each: dmsetup info -c --noheadings --separator : -o FIELDS [NAME].
func DmsetupInfoArgs(name string) ([]string, error) {
	args := []string{"info", "-c", "--noheadings", "--separator", ":", "-o", DmsetupInfoColumns}
	if name == "" {
		return args, nil
	}
	if err := checkDMName(name); err != nil {
		return nil, err
	}
	return append(args, name), nil
}

// ParseDmsetupInfo parses the output of DmsetupInfoArgs. Lines that do
// not split into the five fields (a foreign name holding ':') are skipped:
// banger's names and uuids cannot hold one.
func ParseDmsetupInfo(out []byte) ([]DMDevice, error) {
	var devs []DMDevice
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if line == "" || line == "No devices found" {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 5 {
			continue
		}
		maj, err1 := strconv.ParseUint(f[2], 10, 32)
		mnr, err2 := strconv.ParseUint(f[3], 10, 32)
		open, err3 := strconv.Atoi(f[4])
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("parse dmsetup info line %q: want name:uuid:major:minor:open", line)
		}
		devs = append(devs, DMDevice{Name: f[0], UUID: f[1], Major: uint32(maj), Minor: uint32(mnr), OpenCount: open})
	}
	return devs, nil
}

// DmsetupLsArgs lists devices, only those with a target of this type when
// target is non-empty: dmsetup ls [--target TYPE].
func DmsetupLsArgs(target string) ([]string, error) {
	if target == "" {
		return []string{"ls"}, nil
	}
	if (Target{Length: 1, Type: target}).Validate() != nil {
		return nil, fmt.Errorf("dm target type %q: want one word", target)
	}
	return []string{"ls", "--target", target}, nil
}

var lsLineRE = regexp.MustCompile(`^(\S+)\s+\((\d+)(?::\s*|,\s*)(\d+)\)$`)

// ParseDmsetupLs parses dmsetup ls: "NAME\t(MAJ:MIN)" or the older
// "NAME\t(MAJ, MIN)" lines; "No devices found" is an empty list.
func ParseDmsetupLs(out []byte) ([]DMDevice, error) {
	var devs []DMDevice
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if line == "" || line == "No devices found" {
			continue
		}
		m := lsLineRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("parse dmsetup ls line %q: want NAME (MAJ:MIN)", line)
		}
		maj, _ := strconv.ParseUint(m[2], 10, 32)
		mnr, _ := strconv.ParseUint(m[3], 10, 32)
		devs = append(devs, DMDevice{Name: m[1], Major: uint32(maj), Minor: uint32(mnr)})
	}
	return devs, nil
}

// DmsetupTableArgs prints a device's live table: dmsetup table NAME.
func DmsetupTableArgs(name string) ([]string, error) {
	if err := checkDMName(name); err != nil {
		return nil, err
	}
	return []string{"table", name}, nil
}

// ParseTable parses a table, one target a line (dmsetup table output).
func ParseTable(out []byte) ([]Target, error) {
	var ts []Target
	for line := range strings.Lines(string(out)) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		t, err := ParseTarget(line)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}
