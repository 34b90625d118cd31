package dmsnaptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/dmsnap"
	"banger/internal/execx"
)

// Runner returns a dmsnap.Runner that answers the argv dmsnap's builders
// make for losetup and dmsetup from the fake's state, with their output
// formats and error messages, so ExecBackend can be tested end to end.
// Loops it makes have no autoclear, like losetup's.
func (k *Fake) Runner() dmsnap.Runner { return fakeRunner{k} }

type fakeRunner struct{ k *Fake }

func (r fakeRunner) Run(ctx context.Context, bin string, args ...string) ([]byte, error) {
	return r.RunStdin(ctx, nil, bin, args...)
}

func fail(argv []string, stderr string) error {
	return &execx.Error{Argv: argv, Err: errors.New("exit status 1"), Stderr: stderr}
}

func (r fakeRunner) RunStdin(_ context.Context, stdin io.Reader, bin string, args ...string) ([]byte, error) {
	argv := append([]string{bin}, args...)
	switch filepath.Base(bin) {
	case "losetup":
		return r.losetup(argv, args)
	case "dmsetup":
		return r.dmsetup(argv, args, stdin)
	}
	return nil, fail(argv, fmt.Sprintf("%v: %s", ErrUnsupported, bin))
}

func (r fakeRunner) losetup(argv, args []string) ([]byte, error) {
	k := r.k
	switch {
	case len(args) >= 3 && args[0] == "--find" && args[1] == "--show":
		ro := len(args) == 4 && args[2] == "--read-only"
		if len(args) == 4 && !ro {
			break
		}
		file := args[len(args)-1]
		flag := os.O_RDWR
		if ro {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(file, flag, 0)
		if err != nil {
			return nil, fail(argv, fmt.Sprintf("losetup: %s: failed to set up loop device: %v\n", file, err))
		}
		defer f.Close()
		id, _, err := fileOf(f)
		if err != nil {
			return nil, fail(argv, err.Error())
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		l := k.attachLocked(id, ro, false)
		return []byte(fmt.Sprintf("/dev/loop%d\n", l.n)), nil
	case len(args) == 2 && args[0] == "--detach":
		k.mu.Lock()
		defer k.mu.Unlock()
		if err := k.detachLocked(args[1], nil); err != nil {
			return nil, fail(argv, fmt.Sprintf("losetup: %s: detach failed: No such device or address\n", args[1]))
		}
		return nil, nil
	case strings.Join(args, " ") == strings.Join(dmsnap.LosetupListArgs(), " "):
		loops, _ := k.Loops(context.Background())
		var b strings.Builder
		for _, l := range loops {
			ro, ac := "0", "0"
			if l.ReadOnly {
				ro = "1"
			}
			if l.Autoclear {
				ac = "1"
			}
			fmt.Fprintf(&b, "%s %d:%d %s %s %d:%d %d %s\n", l.Path, l.Major, l.Minor, ro, ac,
				devMajor(l.BackingDev), devMinor(l.BackingDev), l.BackingIno, escapeRaw(l.Backing))
		}
		return []byte(b.String()), nil
	}
	return nil, fail(argv, fmt.Sprintf("%v: losetup %s", ErrUnsupported, strings.Join(args, " ")))
}

func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&0xfffff000 }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&0xffffff00 }

// escapeRaw escapes like libsmartcols' raw output: space, backslash and
// control characters as \xHH.
func escapeRaw(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '\\' || c == 0x7f {
			fmt.Fprintf(&b, `\x%02x`, c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (r fakeRunner) dmsetup(argv, args []string, stdin io.Reader) ([]byte, error) {
	k := r.k
	if len(args) == 0 {
		return nil, fail(argv, "dmsetup: no command")
	}
	switch args[0] {
	case "create":
		if len(args) != 4 && len(args) != 6 || args[2] != "--uuid" {
			break
		}
		var text string
		switch {
		case len(args) == 6 && args[4] == "--table":
			text = args[5]
		case len(args) == 4 && stdin != nil:
			b, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fail(argv, err.Error())
			}
			text = string(b)
		default:
			return nil, fail(argv, "dmsetup: no table")
		}
		table, err := dmsnap.ParseTable([]byte(text))
		if err != nil {
			return nil, fail(argv, err.Error())
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if _, err := k.createLocked(args[1], args[3], table); err != nil {
			msg := err.Error()
			if errors.Is(err, dmsnap.ErrExists) {
				msg = fmt.Sprintf("device-mapper: create ioctl on %s  failed: Device or resource busy\nCommand failed.\n", args[1])
			}
			return nil, fail(argv, msg)
		}
		return nil, nil
	case "remove":
		rest := args[1:]
		if len(rest) > 0 && rest[0] == "--retry" {
			rest = rest[1:]
		}
		if len(rest) != 2 || rest[0] != "--uuid" {
			break
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if err := k.removeLocked(rest[1]); err != nil {
			if errors.Is(err, dmsnap.ErrBusy) {
				return nil, fail(argv, "device-mapper: remove ioctl on  failed: Device or resource busy\nCommand failed.\n")
			}
			return nil, fail(argv, "Device does not exist.\nCommand failed.\n")
		}
		return nil, nil
	case "info":
		want, _ := dmsnap.DmsetupInfoArgs("")
		if len(args) < len(want) || strings.Join(args[:len(want)], " ") != strings.Join(want, " ") || len(args) > len(want)+1 {
			break
		}
		devs, _ := k.DMDevices(context.Background(), "")
		var b strings.Builder
		found := false
		for _, d := range devs {
			if len(args) == len(want)+1 && d.Name != args[len(want)] {
				continue
			}
			found = true
			fmt.Fprintf(&b, "%s:%s:%d:%d:%d\n", d.Name, d.UUID, d.Major, d.Minor, d.OpenCount)
		}
		if len(args) == len(want)+1 && !found {
			return nil, fail(argv, "Device does not exist.\nCommand failed.\n")
		}
		if !found {
			return []byte("No devices found\n"), nil
		}
		return []byte(b.String()), nil
	case "ls":
		if len(args) != 1 && (len(args) != 3 || args[1] != "--target") {
			break
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		var b strings.Builder
		for _, name := range k.dmNames() {
			d := k.dms[name]
			if len(args) == 3 && !hasTarget(d, args[2]) {
				continue
			}
			fmt.Fprintf(&b, "%s\t(%d:%d)\n", d.name, DMMajor, d.minor)
		}
		if b.Len() == 0 {
			return []byte("No devices found\n"), nil
		}
		return []byte(b.String()), nil
	case "table":
		if len(args) != 2 {
			break
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		d := k.dms[args[1]]
		if d == nil {
			return nil, fail(argv, "Device does not exist.\nCommand failed.\n")
		}
		return []byte(dmsnap.FormatTable(d.table)), nil
	}
	return nil, fail(argv, fmt.Sprintf("%v: dmsetup %s", ErrUnsupported, strings.Join(args, " ")))
}

func hasTarget(d *fakeDM, typ string) bool {
	for _, t := range d.table {
		if t.Type == typ {
			return true
		}
	}
	return false
}
