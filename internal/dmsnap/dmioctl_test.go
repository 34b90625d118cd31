package dmsnap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The expectations below are written out in little-endian, the byte
// order of every architecture banger runs on.
func requireLittleEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("byte-level expectations are little-endian")
	}
}

func TestDMIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		got, want uint
		name      string
	}{
		{dmListDevices, unix.DM_LIST_DEVICES, "DM_LIST_DEVICES"},
		{dmDevCreate, unix.DM_DEV_CREATE, "DM_DEV_CREATE"},
		{dmDevRemove, unix.DM_DEV_REMOVE, "DM_DEV_REMOVE"},
		{dmDevSuspend, unix.DM_DEV_SUSPEND, "DM_DEV_SUSPEND"},
		{dmDevStatus, unix.DM_DEV_STATUS, "DM_DEV_STATUS"},
		{dmTableLoad, unix.DM_TABLE_LOAD, "DM_TABLE_LOAD"},
		{dmIoctlNum(3), 0xc138fd03, "DM_DEV_CREATE literal"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	if dmReadonlyFlag != unix.DM_READONLY_FLAG || dmSuspendFlag != unix.DM_SUSPEND_FLAG || dmBufferFullFlag != unix.DM_BUFFER_FULL_FLAG {
		t.Error("flag values differ from linux/dm-ioctl.h")
	}
	if dmNameLen != unix.DM_NAME_LEN || dmUUIDLen != unix.DM_UUID_LEN || dmMaxTypeName != unix.DM_MAX_TYPE_NAME {
		t.Error("field sizes differ from linux/dm-ioctl.h")
	}
}

// TestPutHeaderLayout checks every field of struct dm_ioctl at its
// offset, written out by hand from linux/dm-ioctl.h.
func TestPutHeaderLayout(t *testing.T) {
	requireLittleEndian(t)
	h := dmHeader{
		Version: [3]uint32{4, 1, 2}, DataSize: 0x11223344, DataStart: 312, TargetCount: 3,
		OpenCount: -2, Flags: 0x101, EventNr: 9, Dev: 0x0102030405060708,
		Name: "banger-vm1", UUID: "banger-dmsnap-vm1-00",
	}
	b := make([]byte, dmIoctlSize)
	if err := putHeader(b, h); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 312)
	le := binary.LittleEndian
	le.PutUint32(want[0:], 4)
	le.PutUint32(want[4:], 1)
	le.PutUint32(want[8:], 2)
	le.PutUint32(want[12:], 0x11223344) // data_size
	le.PutUint32(want[16:], 312)        // data_start
	le.PutUint32(want[20:], 3)          // target_count
	le.PutUint32(want[24:], 0xfffffffe) // open_count
	le.PutUint32(want[28:], 0x101)      // flags
	le.PutUint32(want[32:], 9)          // event_nr
	// 36: padding
	le.PutUint64(want[40:], 0x0102030405060708) // dev
	copy(want[48:], "banger-vm1")               // name[128]
	copy(want[176:], "banger-dmsnap-vm1-00")    // uuid[129]; data[7] from 305
	if !bytes.Equal(b, want) {
		t.Fatalf("header bytes\n got %s\nwant %s", hex.EncodeToString(b), hex.EncodeToString(want))
	}
	back, err := parseHeader(b)
	if err != nil || back != h {
		t.Fatalf("parseHeader = %+v, %v; want %+v", back, err, h)
	}

	// Old contents are cleared: the kernel refuses bytes after a name's NUL.
	dirty := bytes.Repeat([]byte{0xff}, dmIoctlSize)
	if err := putHeader(dirty, dmHeader{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if dirty[49] != 0 || dirty[311] != 0 || dirty[36] != 0 {
		t.Error("putHeader left stale bytes")
	}
}

func TestPutHeaderRefuses(t *testing.T) {
	b := make([]byte, dmIoctlSize)
	for _, h := range []dmHeader{
		{Name: strings.Repeat("n", 128)},
		{Name: "a/b"},
		{Name: ".."},
		{Name: "a\x00b"},
		{UUID: strings.Repeat("u", 129)},
	} {
		if err := putHeader(b, h); err == nil {
			t.Errorf("putHeader accepted name %q uuid %q", h.Name, h.UUID)
		}
	}
	if err := putHeader(b[:311], dmHeader{}); err == nil {
		t.Error("short buffer accepted")
	}
	if _, err := parseHeader(b[:100]); err == nil {
		t.Error("short buffer parsed")
	}
	if err := putHeader(b, dmHeader{Name: strings.Repeat("n", 127), UUID: strings.Repeat("u", 128)}); err != nil {
		t.Errorf("longest name and uuid refused: %v", err)
	}
}

// TestEncodeTargetsLayout checks struct dm_target_spec records byte by
// byte: sector_start, length, status, next (from this spec to the next),
// target_type[16], then the NUL-terminated parameters padded to 8.
func TestEncodeTargetsLayout(t *testing.T) {
	requireLittleEndian(t)
	got, err := encodeTargets([]Target{
		{Start: 0, Length: 16384, Type: "snapshot", Params: "7:0 7:1 P 8"},
		{Start: 16384, Length: 8, Type: "zero", Params: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"0000000000000000" + // sector_start 0
		"0040000000000000" + // length 16384
		"00000000" + // status
		"38000000" + // next 56 = 40 + 16
		hex.EncodeToString([]byte("snapshot\x00\x00\x00\x00\x00\x00\x00\x00")) +
		hex.EncodeToString([]byte("7:0 7:1 P 8\x00\x00\x00\x00\x00")) + // 12 bytes + 4 padding
		"0040000000000000" + // sector_start 16384
		"0800000000000000" + // length 8
		"00000000" +
		"30000000" + // next 48 = 40 + 8 (the empty string's NUL, padded)
		hex.EncodeToString([]byte("zero\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")) +
		"0000000000000000"
	if h := hex.EncodeToString(got); h != want {
		t.Fatalf("specs\n got %s\nwant %s", h, want)
	}
	if _, err := encodeTargets([]Target{{Length: 1, Type: "snapshot", Params: "a\x00"}}); err == nil {
		t.Error("NUL in params accepted")
	}
	if _, err := encodeTargets([]Target{{Length: 1, Type: strings.Repeat("t", 16)}}); err == nil {
		t.Error("16-byte target type accepted (no room for the NUL)")
	}
}

func TestDMRequest(t *testing.T) {
	requireLittleEndian(t)
	tgt := Target{Length: 16384, Type: "snapshot", Params: "7:0 7:1 P 8"}
	b, err := dmRequest("banger-vm1", "", 0, []Target{tgt}, 0)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := parseHeader(b)
	if len(b) != 368 || h.DataSize != 368 || h.DataStart != 312 || h.TargetCount != 1 || h.Version != [3]uint32{4, 0, 0} || h.Name != "banger-vm1" || h.UUID != "" {
		t.Fatalf("table load request: len %d, header %+v", len(b), h)
	}
	specs, _ := encodeTargets([]Target{tgt})
	if !bytes.Equal(b[312:], specs) {
		t.Error("specs not at data_start")
	}
	b, err = dmRequest("", "banger-dmsnap-vm1-00", 0, nil, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	h, _ = parseHeader(b)
	if len(b) != 312+16384 || int(h.DataSize) != len(b) || h.TargetCount != 0 || h.Name != "" || h.UUID != "banger-dmsnap-vm1-00" {
		t.Fatalf("output request: len %d, header %+v", len(b), h)
	}
	b, _ = dmRequest("x", "", 0, nil, 3)
	if len(b)%8 != 0 {
		t.Errorf("request size %d is not a multiple of 8", len(b))
	}
}

// nameList builds a DM_LIST_DEVICES answer the way the kernel lays it
// out (each record: dev, next, name, NUL, padding, then event_nr and
// flags as kernels since 5.13 add them).
func nameList(flags uint32, entries ...dmNameEntry) []byte {
	var data []byte
	for i, e := range entries {
		rec := make([]byte, align8(nameListNameOff+len(e.Name)+1)+8)
		binary.LittleEndian.PutUint64(rec, e.Dev)
		if i < len(entries)-1 {
			binary.LittleEndian.PutUint32(rec[8:], uint32(len(rec)))
		}
		copy(rec[nameListNameOff:], e.Name)
		data = append(data, rec...)
	}
	b := make([]byte, dmIoctlSize+len(data)+64)
	_ = putHeader(b, dmHeader{Version: [3]uint32{4, 48, 0}, DataSize: uint32(dmIoctlSize + len(data)), DataStart: dmIoctlSize, Flags: flags})
	copy(b[dmIoctlSize:], data)
	return b
}

func TestParseNameList(t *testing.T) {
	requireLittleEndian(t)
	two := []dmNameEntry{{Name: "vg-root", Dev: mkdev(253, 0)}, {Name: "banger-vm1", Dev: mkdev(253, 300)}}
	got, err := parseNameList(nameList(0, two...))
	if err != nil || len(got) != 2 || got[0] != two[0] || got[1] != two[1] {
		t.Fatalf("parseNameList = %+v, %v", got, err)
	}
	if devMajor(got[1].Dev) != 253 || devMinor(got[1].Dev) != 300 {
		t.Errorf("dev %#x decodes to %d:%d", got[1].Dev, devMajor(got[1].Dev), devMinor(got[1].Dev))
	}
	if got, err := parseNameList(nameList(0)); err != nil || got != nil {
		t.Errorf("no devices: %+v, %v", got, err)
	}
	// Older kernels answer an empty list with one zeroed record.
	if got, err := parseNameList(nameList(0, dmNameEntry{})); err != nil || got != nil {
		t.Errorf("dev 0: %+v, %v", got, err)
	}
	if _, err := parseNameList(nameList(dmBufferFullFlag)); !errors.Is(err, errBufferFull) {
		t.Errorf("buffer full: %v", err)
	}

	back := nameList(0, two...)
	binary.LittleEndian.PutUint32(back[dmIoctlSize+8:], 4) // next inside the record
	if _, err := parseNameList(back); err == nil {
		t.Error("a next pointing inside the record was accepted")
	}
	past := nameList(0, two...)
	binary.LittleEndian.PutUint32(past[dmIoctlSize+8:], 4096)
	if _, err := parseNameList(past); err == nil {
		t.Error("a next past the end was accepted")
	}
	unterminated := nameList(0, dmNameEntry{Name: "abc", Dev: 1})
	h, _ := parseHeader(unterminated)
	for i := dmIoctlSize + nameListNameOff; i < int(h.DataSize); i++ {
		unterminated[i] = 'x'
	}
	if _, err := parseNameList(unterminated); err == nil {
		t.Error("an unterminated name was accepted")
	}
	big := nameList(0, two...)
	binary.LittleEndian.PutUint32(big[offDataSize:], uint32(len(big)+1))
	if _, err := parseNameList(big); err == nil {
		t.Error("data_size beyond the buffer was accepted")
	}
}

func TestDevNumbers(t *testing.T) {
	for _, d := range [][2]uint32{{7, 0}, {7, 255}, {7, 256}, {253, 1048575}, {259, 3}, {4095, 1}, {4096, 70000}} {
		dev := mkdev(d[0], d[1])
		if dev != unix.Mkdev(d[0], d[1]) {
			t.Errorf("mkdev(%d, %d) = %#x, unix.Mkdev %#x", d[0], d[1], dev, unix.Mkdev(d[0], d[1]))
		}
		if devMajor(dev) != d[0] || devMinor(dev) != d[1] {
			t.Errorf("%#x decodes to %d:%d, want %d:%d", dev, devMajor(dev), devMinor(dev), d[0], d[1])
		}
	}
	if DevNum(7, 3) != "7:3" {
		t.Error("DevNum")
	}
}
