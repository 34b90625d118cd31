package helper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/dmsnap"
	"banger/internal/privop"
)

// VM root disks as device-mapper snapshots (privop.CreateSnapshot): the
// Snapshots manager journals every step in the state dir and is reconciled
// when the helper starts, before anything is served.

// MaxSnapshots bounds the snapshots (VMs running on dm storage) the helper
// keeps at once.
var MaxSnapshots = 256

// snapshotsReady refuses the snapshot ops when the host cannot make them.
func (s *Server) snapshotsReady() error {
	if s.cfg.Snapshots == nil {
		return privop.Errorf(privop.CodeNotFound, "dm snapshots are not available in this helper: %s", s.snapshotsOff())
	}
	return nil
}

// fdName is the path the kernel reports for f, for messages and the
// journal (never opened again).
func fdName(f *os.File) string {
	if p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd()))); err == nil {
		return p
	}
	return f.Name()
}

// createSnapshot makes o's snapshot from files (the base image, then the
// COW file) and answers with the device open read-write.
func (s *Server) createSnapshot(ctx context.Context, o privop.CreateSnapshot, files []*os.File) (privop.CreateSnapshotResult, *os.File, error) {
	var res privop.CreateSnapshotResult
	if err := s.snapshotsReady(); err != nil {
		return res, nil, err
	}
	// Each snapshot holds two loop devices, a host-wide resource: bound
	// what one owner can take (checked without a lock, so concurrent
	// creates may pass it by at most the connection limit).
	if n := len(s.cfg.Snapshots.Entries()); n >= MaxSnapshots {
		return res, nil, privop.Errorf(privop.CodeBusy, "%d snapshots exist, the most the helper makes: remove some VMs' snapshots (stop them) first", n)
	}
	// banger-owned files only: the fd proves bangerd may use the file, the
	// owner that it is banger's to give.
	for i, what := range []string{"base image", "cow file"} {
		var st unix.Stat_t
		if err := unix.Fstat(int(files[i].Fd()), &st); err != nil {
			return res, nil, fmt.Errorf("stat %s: %w", what, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return res, nil, privop.Errorf(privop.CodeForbidden, "%s %s is not a regular file", what, fdName(files[i]))
		}
		if int(st.Uid) != s.cfg.OwnerUID {
			return res, nil, privop.Errorf(privop.CodeForbidden, "%s %s is owned by uid %d, not banger's owner (uid %d)", what, fdName(files[i]), st.Uid, s.cfg.OwnerUID)
		}
		fl, err := unix.FcntlInt(files[i].Fd(), unix.F_GETFL, 0)
		if err != nil {
			return res, nil, fmt.Errorf("read %s flags: %w", what, err)
		}
		if acc := fl & unix.O_ACCMODE; fl&unix.O_PATH != 0 || acc == unix.O_WRONLY || i == 1 && acc != unix.O_RDWR {
			return res, nil, privop.Errorf(privop.CodeForbidden, "%s %s: the fd's access mode does not allow it (want %s)", what, fdName(files[i]), []string{"readable", "read-write"}[i])
		}
	}
	spec := dmsnap.Spec{
		ID: o.VMID, Base: fdName(files[0]), COW: fdName(files[1]),
		BaseFile: files[0], COWFile: files[1], ChunkSectors: o.ChunkSectors,
	}
	open := s.cfg.OpenSnapshot
	if open == nil {
		open = openBlockDevice
	}
	// Opened while the VM's id is still in flight in the manager, so no
	// remove of it can free the device number first.
	e, dev, err := s.cfg.Snapshots.CreateOpen(ctx, spec, func(e dmsnap.Entry) (*os.File, error) {
		return open(e.DM.Path, e.DM.Major, e.DM.Minor, e.UUID)
	})
	if err != nil {
		return res, nil, snapshotErr(err)
	}
	s.log.Info("snapshot created", "vm_id", o.VMID, "name", e.Name, "dev", fmt.Sprintf("%d:%d", e.DM.Major, e.DM.Minor), "base", spec.Base, "cow", spec.COW)
	return privop.CreateSnapshotResult{Name: e.Name, Major: e.DM.Major, Minor: e.DM.Minor, Sectors: e.Sectors}, dev, nil
}

// removeSnapshot removes o's snapshot; none is fine.
func (s *Server) removeSnapshot(ctx context.Context, o privop.RemoveSnapshot) error {
	if err := s.snapshotsReady(); err != nil {
		return err
	}
	// A jail may hold a device node of the snapshot, owned by the owner:
	// once the snapshot is gone its number can go to another device.
	if s.cfg.Jails != nil {
		if _, ok := s.cfg.Jails.Jail(o.VMID); ok {
			return privop.Errorf(privop.CodeBusy, "vm %s still has a firecracker jail, which may hold a node of its snapshot device: cleanup_jail first", o.VMID)
		}
	}
	if err := s.cfg.Snapshots.Remove(ctx, o.VMID); err != nil {
		return snapshotErr(err)
	}
	s.log.Info("snapshot removed", "vm_id", o.VMID)
	return nil
}

// snapshotErr gives a dmsnap failure its code.
func snapshotErr(err error) error {
	switch {
	case errors.Is(err, dmsnap.ErrBusy), errors.Is(err, dmsnap.ErrInUse):
		return &privop.Error{Code: privop.CodeBusy, Message: err.Error()}
	case errors.Is(err, dmsnap.ErrOutsideRoot):
		return &privop.Error{Code: privop.CodeForbidden, Message: err.Error()}
	}
	return err
}

// openBlockDevice opens the snapshot's node read-write and checks it is
// the block device the kernel made: the number (a node swapped in /dev
// would be someone else's disk) and, with the device held open so it
// cannot go meanwhile, its dm uuid.
func openBlockDevice(path string, major, minor uint32, uuid string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != major || unix.Minor(st.Rdev) != minor {
		f.Close()
		return nil, fmt.Errorf("%s is not block device %d:%d", path, major, minor)
	}
	got, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/dm/uuid", major, minor))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read the dm uuid of %s: %w", path, err)
	}
	if have := strings.TrimSpace(string(got)); have != uuid {
		f.Close()
		return nil, fmt.Errorf("%s (%d:%d) is not the snapshot made: uuid %q, want %q", path, major, minor, have, uuid)
	}
	return f, nil
}

// reconcileSnapshots brings the journal and the kernel in line at
// start-up: devices a crash left half-made are torn down and reported.
func (s *Server) reconcileSnapshots(ctx context.Context) {
	if s.cfg.Snapshots == nil {
		return
	}
	rep, err := s.cfg.Snapshots.Reconcile(ctx)
	if err != nil {
		s.log.Error("snapshot reconcile failed", "err", err)
		return
	}
	if rep.Clean() {
		s.log.Info("snapshots reconciled", "active", len(s.cfg.Snapshots.Entries()))
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(rep.String()), "\n") {
		s.log.Warn("snapshot reconcile", "action", line)
	}
}

func (s *Server) snapshotsOff() string {
	if s.cfg.Snapshots != nil {
		return ""
	}
	if s.cfg.SnapshotsOff == "" {
		return "not configured"
	}
	return s.cfg.SnapshotsOff
}

// snapshotCounts counts the active snapshots and describes the others,
// for ping (and so doctor).
func (s *Server) snapshotCounts() (active int, stuck []string) {
	if s.cfg.Snapshots == nil {
		return 0, nil
	}
	for _, e := range s.cfg.Snapshots.Entries() {
		if e.State == dmsnap.StateActive {
			active++
			continue
		}
		d := e.ID + ": " + string(e.State)
		if e.Error != "" {
			d += ": " + e.Error
		}
		stuck = append(stuck, d)
	}
	return active, stuck
}
