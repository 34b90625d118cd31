package helper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"banger/internal/jail"
	"banger/internal/privop"
	"banger/internal/procstat"

	"golang.org/x/sys/unix"
)

// launchFirecracker stages o's jail from files (validated: one per
// o.Files, in order) and starts the install's jailer in it, which drops to
// a uid of the VM's own. It records the jail before making it and the
// process once started; any failure undoes what was done.
func (s *Server) launchFirecracker(ctx context.Context, o privop.LaunchFirecracker, files []*os.File) (privop.LaunchFirecrackerResult, error) {
	var res privop.LaunchFirecrackerResult
	if err := s.jailsReady(); err != nil {
		return res, err
	}
	if len(files) != len(o.Files) {
		return res, privop.Errorf(privop.CodeBadRequest, "%d fds for %d files", len(files), len(o.Files))
	}
	if off := s.firecrackerOff(); off != "" {
		return res, privop.Errorf(privop.CodeForbidden, "%s", off)
	}
	if o.Tap != "" {
		if _, ok := s.cfg.Ledger.Tap(o.Tap); !ok {
			return res, errNotOurs("tap", o.Tap)
		}
	}
	s.jailMu.Lock()
	defer s.jailMu.Unlock()
	if _, ok := s.cfg.Jails.Jail(o.VMID); ok {
		return res, privop.Errorf(privop.CodeBadRequest, "jail for VM %s already exists: clean it up first", o.VMID)
	}
	drives := 0
	for _, f := range o.Files {
		if f.Role == privop.JailDrive {
			drives++
		}
	}
	if n := s.heldLoops(); n+drives > s.cfg.MaxLoops {
		// Loop devices are the host's: a bound keeps the owner's VMs
		// from taking them all.
		return res, privop.Errorf(privop.CodeBusy, "the helper holds %d loop devices for running VMs, and at most %d", n, s.cfg.MaxLoops)
	}
	uid, err := s.allocUID()
	if err != nil {
		return res, err
	}
	if err := prepareJailBase(s.cfg.JailBase); err != nil {
		return res, err
	}
	l, err := jail.NewLayout(s.cfg.JailBase, jail.ExecName(s.cfg.FirecrackerBin), o.VMID)
	if err != nil {
		return res, jailErr(err)
	}
	spec := jail.Spec{Layout: l, FirecrackerBin: s.cfg.FirecrackerBin, UID: uid, GID: uid}
	var console *os.File
	for i, f := range o.Files {
		switch f.Role {
		case privop.JailConsole:
			console = files[i]
			continue
		case privop.JailKernel, privop.JailInitrd:
			// Linked into the jail from root's cache: bangerd's file may
			// sit in another mount namespace (no link crosses it) and is
			// the owner's to change.
			cached, err := s.bootCache().file(files[i])
			if err != nil {
				return res, jailErr(fmt.Errorf("%s: %w", f.Role, err))
			}
			defer cached.Close()
			spec.Files = append(spec.Files, jail.File{Role: f.Role, Name: f.Name, F: cached})
			continue
		}
		spec.Files = append(spec.Files, jail.File{Role: f.Role, Name: f.Name, ReadOnly: f.ReadOnly, F: files[i]})
	}

	entry := JailEntry{ExecName: l.ExecName, Chroot: l.Chroot(), UID: uid, Tap: o.Tap, CreatedAt: time.Now().UTC()}
	if ok, err := s.cfg.Jails.add(o.VMID, entry); err != nil {
		return res, err
	} else if !ok {
		return res, privop.Errorf(privop.CodeBadRequest, "jail for VM %s already exists: clean it up first", o.VMID)
	}
	holds, err := jail.Stage(spec)
	if err != nil {
		if errors.Is(err, jail.ErrLeftBehind) {
			return res, errors.Join(err, errors.New("the jail stays recorded; retry cleanup_jail"))
		}
		// Stage undid its own work, and a jail directory it found already
		// there is not ours to remove: only the record made above is.
		if rerr := s.cfg.Jails.remove(o.VMID); rerr != nil {
			return res, errors.Join(err, rerr)
		}
		return res, jailErr(err)
	}
	// undo removes the jail and, once it is gone, its record; a jail that
	// could not be removed stays recorded for cleanup_jail.
	undo := func(cause error) error {
		holds.Close()
		if err := jail.Remove(l); err != nil {
			return errors.Join(cause, fmt.Errorf("undo launch (the jail stays recorded; retry cleanup_jail): %w", err))
		}
		if err := s.cfg.Jails.remove(o.VMID); err != nil {
			return errors.Join(cause, err)
		}
		return cause
	}
	if o.Tap != "" {
		// Firecracker opens the tap by name, as the VM's uid.
		if err := s.cfg.Net.SetTapOwner(ctx, o.Tap, uid, uid); err != nil {
			return res, undo(netErr("hand the tap to the VM", err))
		}
	}
	argv := jail.JailerArgv(jail.ArgvSpec{
		JailerBin: s.cfg.JailerBin, FirecrackerBin: s.cfg.FirecrackerBin, VMID: o.VMID,
		UID: uid, GID: uid, Base: l.Base,
	})
	p, err := jail.Start(argv, console)
	if err != nil {
		return res, undo(jailErr(err))
	}
	entry.PID, entry.PIDStart = p.PID, p.StartTime
	if err := s.cfg.Jails.set(o.VMID, entry); err != nil {
		// An unrecorded firecracker could never be told from a stranger
		// reusing its pid: stop the one just started.
		if kerr := p.Kill(); kerr != nil {
			return res, errors.Join(err, kerr)
		}
		<-p.Done()
		return res, undo(err)
	}
	s.holds[o.VMID] = holds
	go func() {
		<-p.Done()
		s.log.Info("firecracker exited", "vm_id", o.VMID, "pid", p.PID)
	}()
	s.log.Info("firecracker started", "vm_id", o.VMID, "pid", p.PID, "uid", uid, "chroot", l.Chroot())
	return privop.LaunchFirecrackerResult{PID: p.PID, PIDStart: p.StartTime, UID: uid, Chroot: l.Chroot()}, nil
}

// firecrackerOff says why the pinned binaries cannot run, or "".
func (s *Server) firecrackerOff() string {
	const pin = " (root pins the binaries: banger system install or run --firecracker-bin, --jailer-bin)"
	if s.cfg.FirecrackerBin == "" || s.cfg.JailerBin == "" {
		return "no firecracker or jailer pinned in the install metadata" + pin
	}
	if err := jail.CheckBinary(s.cfg.JailerBin); err != nil {
		return "jailer: " + err.Error() + pin
	}
	if err := jail.CheckBinary(s.cfg.FirecrackerBin); err != nil {
		return "firecracker: " + err.Error() + pin
	}
	return ""
}

// heldLoops counts the loop devices held for running jails (jailMu held).
func (s *Server) heldLoops() int {
	n := 0
	for _, h := range s.holds {
		n += len(h)
	}
	return n
}

// releaseHolds closes the loop devices a jail's drives sit on (jailMu
// held).
func (s *Server) releaseHolds(vmID string) {
	s.holds[vmID].Close()
	delete(s.holds, vmID)
}

// allocUID picks the lowest uid of the VMM range that no recorded jail
// has and no process runs as (jailMu held). A process still running as a
// uid (a firecracker the helper forgot, say) keeps it from being reused.
func (s *Server) allocUID() (int, error) {
	used := map[int]bool{}
	for _, id := range s.cfg.Jails.VMIDs() {
		e, _ := s.cfg.Jails.Jail(id)
		used[e.UID] = true
	}
	running, err := processUIDs(s.cfg.ProcDir)
	if err != nil {
		return 0, err
	}
	for uid := s.cfg.VMMUIDBase; uid < s.cfg.VMMUIDBase+s.cfg.VMMUIDCount; uid++ {
		if !used[uid] && !running[uid] {
			return uid, nil
		}
	}
	return 0, privop.Errorf(privop.CodeBusy, "all %d VMM uids from %d are in use", s.cfg.VMMUIDCount, s.cfg.VMMUIDBase)
}

// processUIDs returns every uid (real, effective, saved or filesystem)
// some process under procDir runs as.
func processUIDs(procDir string) (map[int]bool, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := map[int]bool{}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join(procDir, e.Name(), "status"))
		if err != nil {
			continue // gone
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			rest, ok := strings.CutPrefix(sc.Text(), "Uid:")
			if !ok {
				continue
			}
			for _, v := range strings.Fields(rest) {
				if n, err := strconv.Atoi(v); err == nil {
					out[n] = true
				}
			}
			break
		}
		f.Close()
	}
	return out, nil
}

// dialJail connects to a socket of a recorded, running jail, checking
// that firecracker itself serves it, and answers with the connection.
func (s *Server) dialJail(ctx context.Context, o privop.DialJail) (*os.File, error) {
	if err := s.jailsReady(); err != nil {
		return nil, err
	}
	e, ok := s.cfg.Jails.Jail(o.VMID)
	if !ok {
		return nil, privop.Errorf(privop.CodeNotFound, "no jail for VM %s", o.VMID)
	}
	if !jail.Alive(e.PID, e.PIDStart) {
		return nil, privop.Errorf(privop.CodeNotFound, "firecracker of VM %s is not running", o.VMID)
	}
	l, err := s.recordedLayout(o.VMID, e)
	if err != nil {
		return nil, err
	}
	rel := privop.JailAPISocket
	if o.Socket == privop.SocketVsock {
		rel = privop.JailVsock
	}
	alive := func() bool { return jail.Alive(e.PID, e.PIDStart) }
	f, err := jail.Dial(ctx, l.Chroot(), rel, e.PID, time.Duration(o.WaitMS)*time.Millisecond, alive)
	return f, jailErr(err)
}

// signalVMM signals a recorded, running firecracker through a pidfd, so
// a process that reused its pid is never signalled.
func (s *Server) signalVMM(o privop.SignalVMM) error {
	if err := s.jailsReady(); err != nil {
		return err
	}
	e, ok := s.cfg.Jails.Jail(o.VMID)
	if !ok || e.PID == 0 {
		return privop.Errorf(privop.CodeNotFound, "no firecracker recorded for VM %s", o.VMID)
	}
	sig := unix.SIGTERM
	if o.Signal == privop.SignalKill {
		sig = unix.SIGKILL
	}
	pfd, err := unix.PidfdOpen(e.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // already gone
	}
	if err != nil {
		return fmt.Errorf("signal firecracker of VM %s: %w", o.VMID, err)
	}
	defer unix.Close(pfd)
	// Checked with the pidfd held: the pid cannot be reused past it.
	st, err := procstat.Read(e.PID)
	if err != nil || st.StartTime != e.PIDStart || st.Gone() {
		return nil // the recorded process is gone
	}
	if err := unix.PidfdSendSignal(pfd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal firecracker of VM %s: %w", o.VMID, err)
	}
	return nil
}
