package dmsnap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The device-mapper ioctl encoding (linux/dm-ioctl.h, interface version
// 4), kept pure so every byte is checked by tests on any host. Each ioctl
// takes one buffer: struct dm_ioctl, then its data from data_start (the
// target specs of DM_TABLE_LOAD, or room for the kernel's answer). The
// kernel uses native byte order and aligns data to 8 bytes.

const (
	dmIoctlSize      = 312 // sizeof(struct dm_ioctl)
	dmTargetSpecSize = 40  // sizeof(struct dm_target_spec)
	dmNameLen        = 128 // DM_NAME_LEN, NUL included
	dmUUIDLen        = 129 // DM_UUID_LEN, NUL included
	dmMaxTypeName    = 16  // DM_MAX_TYPE_NAME, NUL included

	// Offsets inside struct dm_ioctl.
	offDataSize    = 12
	offDataStart   = 16
	offTargetCount = 20
	offOpenCount   = 24
	offFlags       = 28
	offEventNr     = 32
	offDev         = 40
	offName        = 48
	offUUID        = offName + dmNameLen // 176

	// dmVersionMajor is the interface we speak; minor 0 asks for nothing
	// newer than the first v4 kernel had.
	dmVersionMajor = 4

	dmReadonlyFlag   = 1 << 0 // DM_READONLY_FLAG
	dmSuspendFlag    = 1 << 1 // DM_SUSPEND_FLAG
	dmBufferFullFlag = 1 << 8 // DM_BUFFER_FULL_FLAG

	// nameListNameOff is offsetof(struct dm_name_list, name): dev (u64),
	// next (u32), then the name.
	nameListNameOff = 12
)

// errBufferFull: the answer did not fit; ask again with more room.
var errBufferFull = errors.New("dm ioctl answer does not fit the buffer")

// dmHeader is struct dm_ioctl.
type dmHeader struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

func align8(n int) int { return (n + 7) &^ 7 }

// checkIoctlName checks what the kernel's check_name and field sizes
// require of a dm name: room for the NUL, no '/', not "." or "..".
func checkIoctlName(name string) error {
	if len(name) >= dmNameLen || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("dm name %q: want fewer than %d bytes, no '/' or NUL", name, dmNameLen)
	}
	return nil
}

func checkIoctlUUID(uuid string) error {
	if len(uuid) >= dmUUIDLen || strings.Contains(uuid, "\x00") {
		return fmt.Errorf("dm uuid %q: want fewer than %d bytes, no NUL", uuid, dmUUIDLen)
	}
	return nil
}

// putHeader writes h into b[:dmIoctlSize]; strings are NUL-padded to their
// fields, which must stay all-NUL after the terminator (strict kernels
// check).
func putHeader(b []byte, h dmHeader) error {
	if len(b) < dmIoctlSize {
		return fmt.Errorf("encode dm ioctl: buffer of %d bytes, want at least %d", len(b), dmIoctlSize)
	}
	if err := checkIoctlName(h.Name); err != nil {
		return fmt.Errorf("encode dm ioctl: %w", err)
	}
	if err := checkIoctlUUID(h.UUID); err != nil {
		return fmt.Errorf("encode dm ioctl: %w", err)
	}
	clear(b[:dmIoctlSize])
	ne := binary.NativeEndian
	for i, v := range h.Version {
		ne.PutUint32(b[4*i:], v)
	}
	ne.PutUint32(b[offDataSize:], h.DataSize)
	ne.PutUint32(b[offDataStart:], h.DataStart)
	ne.PutUint32(b[offTargetCount:], h.TargetCount)
	ne.PutUint32(b[offOpenCount:], uint32(h.OpenCount))
	ne.PutUint32(b[offFlags:], h.Flags)
	ne.PutUint32(b[offEventNr:], h.EventNr)
	ne.PutUint64(b[offDev:], h.Dev)
	copy(b[offName:offName+dmNameLen-1], h.Name)
	copy(b[offUUID:offUUID+dmUUIDLen-1], h.UUID)
	return nil
}

// parseHeader reads struct dm_ioctl from b.
func parseHeader(b []byte) (dmHeader, error) {
	if len(b) < dmIoctlSize {
		return dmHeader{}, fmt.Errorf("decode dm ioctl: %d bytes, want at least %d", len(b), dmIoctlSize)
	}
	ne := binary.NativeEndian
	var h dmHeader
	for i := range h.Version {
		h.Version[i] = ne.Uint32(b[4*i:])
	}
	h.DataSize = ne.Uint32(b[offDataSize:])
	h.DataStart = ne.Uint32(b[offDataStart:])
	h.TargetCount = ne.Uint32(b[offTargetCount:])
	h.OpenCount = int32(ne.Uint32(b[offOpenCount:]))
	h.Flags = ne.Uint32(b[offFlags:])
	h.EventNr = ne.Uint32(b[offEventNr:])
	h.Dev = ne.Uint64(b[offDev:])
	h.Name = cString(b[offName : offName+dmNameLen])
	h.UUID = cString(b[offUUID : offUUID+dmUUIDLen])
	return h, nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// encodeTargets lays out dm_target_spec records for DM_TABLE_LOAD: each
// spec, its NUL-terminated parameters, padding to 8 bytes; next is the
// distance from this spec to the following one (an input-only meaning: on
// output the kernel counts from the first spec).
func encodeTargets(table []Target) ([]byte, error) {
	var out []byte
	for _, t := range table {
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("encode dm table: %w", err)
		}
		if len(t.Type) >= dmMaxTypeName {
			return nil, fmt.Errorf("encode dm table: target type %q too long", t.Type)
		}
		rec := make([]byte, dmTargetSpecSize+align8(len(t.Params)+1))
		ne := binary.NativeEndian
		ne.PutUint64(rec[0:], t.Start)
		ne.PutUint64(rec[8:], t.Length)
		// status (rec[16:20]) stays 0: input must not set it.
		ne.PutUint32(rec[20:], uint32(len(rec)))
		copy(rec[24:24+dmMaxTypeName-1], t.Type)
		copy(rec[dmTargetSpecSize:], t.Params)
		out = append(out, rec...)
	}
	return out, nil
}

// dmRequest builds an ioctl buffer: the header for name (or uuid) and
// flags, then the table (DM_TABLE_LOAD) or outRoom zero bytes for the
// kernel's answer (DM_LIST_DEVICES). data_size is the whole buffer, a
// multiple of 8.
func dmRequest(name, uuid string, flags uint32, table []Target, outRoom int) ([]byte, error) {
	specs, err := encodeTargets(table)
	if err != nil {
		return nil, err
	}
	size := dmIoctlSize + align8(len(specs)+outRoom)
	b := make([]byte, size)
	h := dmHeader{
		Version:     [3]uint32{dmVersionMajor, 0, 0},
		DataSize:    uint32(size),
		DataStart:   dmIoctlSize,
		TargetCount: uint32(len(table)),
		Flags:       flags,
		Name:        name,
		UUID:        uuid,
	}
	if err := putHeader(b, h); err != nil {
		return nil, err
	}
	copy(b[dmIoctlSize:], specs)
	return b, nil
}

// dmNameEntry is one record of DM_LIST_DEVICES' answer.
type dmNameEntry struct {
	Name string
	Dev  uint64
}

// parseNameList decodes DM_LIST_DEVICES' answer: struct dm_name_list
// records (dev u64, next u32, NUL-terminated name, then fields newer
// kernels add), each next counted from the record's own start, the last
// with next 0. A first record with dev 0 means no devices.
func parseNameList(b []byte) ([]dmNameEntry, error) {
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.Flags&dmBufferFullFlag != 0 {
		return nil, errBufferFull
	}
	if h.DataSize > uint32(len(b)) || h.DataStart > h.DataSize {
		return nil, fmt.Errorf("decode dm device list: data %d..%d outside the %d-byte buffer", h.DataStart, h.DataSize, len(b))
	}
	data := b[h.DataStart:h.DataSize]
	var out []dmNameEntry
	ne := binary.NativeEndian
	for off := 0; ; {
		if off+nameListNameOff >= len(data) {
			if off == 0 {
				return nil, nil // an empty answer
			}
			return nil, fmt.Errorf("decode dm device list: record at %d past the end (%d bytes)", off, len(data))
		}
		dev := ne.Uint64(data[off:])
		next := ne.Uint32(data[off+8:])
		if off == 0 && dev == 0 {
			return nil, nil
		}
		i := bytes.IndexByte(data[off+nameListNameOff:], 0)
		if i < 0 {
			return nil, fmt.Errorf("decode dm device list: name at %d not NUL-terminated", off)
		}
		out = append(out, dmNameEntry{Name: string(data[off+nameListNameOff : off+nameListNameOff+i]), Dev: dev})
		if next == 0 {
			return out, nil
		}
		if int(next) < nameListNameOff+i+1 {
			return nil, fmt.Errorf("decode dm device list: record at %d points back (next %d)", off, next)
		}
		off += int(next)
	}
}

// devMajor and devMinor decode a device number as the kernel encodes it
// for user space (huge_encode_dev, like st_dev).
func devMajor(dev uint64) uint32 { return uint32((dev>>8)&0xfff | (dev>>32)&0xfffff000) }
func devMinor(dev uint64) uint32 { return uint32(dev&0xff | (dev>>12)&0xffffff00) }
