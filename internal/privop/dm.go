package privop

import "fmt"

// A VM's root disk can be a device-mapper snapshot of its image: a read-only
// loop of the image, a read-write loop of the VM's copy-on-write file, and a
// dm snapshot over both (internal/dmsnap, journaled in the helper's state
// dir). The two files travel as fds bangerd opened, so the helper never
// opens an owner-chosen path, and the finished device comes back as an fd,
// since bangerd cannot open /dev/dm-N itself.

// CreateSnapshot makes VM's snapshot device. Its request carries two fds, in
// order: the base image (open for reading) and the VM's COW file (open
// read-write, one link, made and sized by bangerd); both must be regular
// files owned by the registered owner. The answer carries the device, open
// read-write, beside a CreateSnapshotResult.
type CreateSnapshot struct {
	VMID string `json:"vm_id"`
	// ChunkSectors is the snapshot chunk size in 512-byte sectors; 0 means
	// 8 (4 KiB).
	ChunkSectors uint32 `json:"chunk_sectors,omitempty"`
}

// CreateSnapshotResult is CreateSnapshot's answer; the device's fd travels
// beside it.
type CreateSnapshotResult struct {
	Name    string `json:"name"` // the dm name, banger-<vm id>
	Major   uint32 `json:"major"`
	Minor   uint32 `json:"minor"`
	Sectors uint64 `json:"sectors"`
}

// Name implements Op.
func (CreateSnapshot) Name() string { return "dm_snapshot_create" }

// Validate implements Op.
func (o CreateSnapshot) Validate() error {
	if err := ValidVMID(o.VMID); err != nil {
		return err
	}
	if c := o.ChunkSectors; c != 0 && (c < 8 || c > 2048 || c&(c-1) != 0) {
		return fmt.Errorf("chunk_sectors %d: want 0 or a power of two from 8 to 2048", c)
	}
	return nil
}

// RemoveSnapshot removes VM's snapshot device and its loops (the COW file
// stays: it is bangerd's). A VM without one is fine; a device still open
// is retried for a few seconds, then refused as busy.
type RemoveSnapshot struct {
	VMID string `json:"vm_id"`
}

// Name implements Op.
func (RemoveSnapshot) Name() string { return "dm_snapshot_remove" }

// Validate implements Op.
func (o RemoveSnapshot) Validate() error { return ValidVMID(o.VMID) }

// SnapshotCOWSize is the size bangerd gives a new COW file for an image of
// originBytes: room for a full rewrite of the origin, one 16-byte exception
// per 4 KiB chunk (a 4 KiB metadata area per 256 chunks, doubled for
// slack) and the header, rounded to 4 KiB. The file is sparse, so the size
// costs nothing until written.
func SnapshotCOWSize(originBytes int64) int64 {
	n := originBytes + originBytes/128 + 1<<20
	return (n + 4095) &^ 4095
}
