package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/paths"
	"banger/internal/privop"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Snapshots makes and removes VM root disks as device-mapper snapshots of
// their images: the root helper's dm_snapshot ops. bangerd opens the image
// and the VM's COW file and passes them; the device comes back open, since
// bangerd cannot open /dev/dm-N itself.
type Snapshots interface {
	CreateSnapshot(ctx context.Context, vmID string, base, cow *os.File) (privop.CreateSnapshotResult, *os.File, error)
	RemoveSnapshot(ctx context.Context, vmID string) error
}

// rootKind says how v's root disk is kept (an api.RootDisk value) and
// which file of its directory holds it: the storage in use when it was
// made decides, and the file's name records it.
func (s *Service) rootKind(v store.VM) (kind, file string) {
	dir := s.layout.VMDir(v.ID)
	for _, k := range []struct{ kind, file string }{
		{api.RootDiskSnapshot, paths.RootCOW},
		{api.RootDiskOverlay, paths.RootOverlay},
	} {
		if _, err := os.Lstat(filepath.Join(dir, k.file)); err == nil {
			return k.kind, k.file
		}
	}
	return api.RootDiskFile, paths.RootDisk
}

// usesSnapshot reports whether v's root disk is a snapshot of its image
// (made while storage was dm) rather than a file of its own.
func (s *Service) usesSnapshot(v store.VM) bool {
	kind, _ := s.rootKind(v)
	return kind == api.RootDiskSnapshot
}

// makeRootCOW creates the sparse COW file of a snapshot-backed VM.
func (s *Service) makeRootCOW(v store.VM) error {
	if s.opts.Snapshots == nil {
		return errdefs.Unavailable("storage dm: the root helper cannot make snapshots")
	}
	st, err := os.Stat(s.imagePath(v.ImageID))
	if err != nil {
		return fmt.Errorf("stat image: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.layout.VMDir(v.ID), paths.RootCOW), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create root cow file: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(privop.SnapshotCOWSize(st.Size())); err != nil {
		return fmt.Errorf("size root cow file: %w", err)
	}
	return nil
}

// rootDrive is v's root drive: its own file, or a snapshot device the
// helper makes now (removed again by releaseRoot when the VM stops). The
// caller closes the drive's File once the VMM holds its own copy.
func (s *Service) rootDrive(ctx context.Context, v store.VM) (vmm.Drive, error) {
	dir := s.layout.VMDir(v.ID)
	switch kind, file := s.rootKind(v); kind {
	case api.RootDiskOverlay:
		return vmm.Drive{ID: "root", Path: filepath.Join(dir, file), Format: vmm.FormatQCOW2}, nil
	case api.RootDiskFile:
		return vmm.Drive{ID: "root", Path: filepath.Join(dir, file)}, nil
	}
	if s.opts.Snapshots == nil {
		return vmm.Drive{}, errdefs.Unavailable("vm %q's root disk is a device-mapper snapshot, but the root helper cannot make snapshots here (see banger doctor)", v.Name)
	}
	base, err := os.Open(s.imagePath(v.ImageID))
	if err != nil {
		return vmm.Drive{}, errdefs.NotFound("image of vm %q: %v", v.Name, err)
	}
	defer base.Close()
	cow, err := os.OpenFile(filepath.Join(dir, paths.RootCOW), os.O_RDWR, 0)
	if err != nil {
		return vmm.Drive{}, fmt.Errorf("open root cow file: %w", err)
	}
	defer cow.Close()
	r, dev, err := s.opts.Snapshots.CreateSnapshot(ctx, v.ID, base, cow)
	if privop.CodeOf(err) == privop.CodeBusy {
		// A snapshot left by a crash (bangerd's or the VMM's): its VM is
		// not running, so it is stale. Remove it and try once more.
		if rerr := s.opts.Snapshots.RemoveSnapshot(ctx, v.ID); rerr != nil {
			return vmm.Drive{}, fmt.Errorf("make root snapshot: %w (removing the stale one: %w)", err, rerr)
		}
		r, dev, err = s.opts.Snapshots.CreateSnapshot(ctx, v.ID, base, cow)
	}
	if err != nil {
		return vmm.Drive{}, fmt.Errorf("make root snapshot: %w", err)
	}
	return vmm.Drive{ID: "root", Path: "/dev/mapper/" + r.Name, File: dev, Block: true}, nil
}

// releaseRoot removes v's root snapshot, if it has one; none is fine.
func (s *Service) releaseRoot(ctx context.Context, v store.VM) error {
	if !s.usesSnapshot(v) {
		return nil
	}
	if s.opts.Snapshots == nil {
		return errdefs.Unavailable("vm %q's root disk is a device-mapper snapshot, but no root helper can remove it here (see banger doctor)", v.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.opts.Snapshots.RemoveSnapshot(ctx, v.ID); err != nil {
		return fmt.Errorf("remove root snapshot of %s: %w", v.Name, err)
	}
	return nil
}

// copyRoot writes v's root filesystem (stopped) to out: its file cloned,
// or its snapshot read whole through a device made for the copy.
func (s *Service) copyRoot(ctx context.Context, v store.VM, out string) (err error) {
	switch kind, file := s.rootKind(v); kind {
	case api.RootDiskOverlay:
		return image.FlattenOverlay(ctx, filepath.Join(s.layout.VMDir(v.ID), file), out)
	case api.RootDiskFile:
		return image.CloneFile(filepath.Join(s.layout.VMDir(v.ID), file), out)
	}
	d, err := s.rootDrive(ctx, v)
	if err != nil {
		return err
	}
	defer func() {
		d.File.Close()
		err = errors.Join(err, s.releaseRoot(context.Background(), v))
	}()
	return image.CopyDevice(d.File, out)
}
