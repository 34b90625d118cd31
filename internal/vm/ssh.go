package vm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/atomicfile"
	"banger/internal/filesync"
	"banger/internal/paths"
	"banger/internal/sshconfig"
	"banger/internal/sshkeys"
	"banger/internal/store"
)

// Guest paths of the SSH material bangerd pushes at every boot. They live
// on the guest's /run tmpfs: nothing is written to the image or the disk.
const (
	guestSSHDir         = "/run/banger/ssh"
	guestHostKey        = guestSSHDir + "/ssh_host_ed25519_key"
	guestAuthorizedKeys = guestSSHDir + "/authorized_keys"
)

// SSHOptions wire the SSH material into the service.
type SSHOptions struct {
	OwnerKeyPath string // the owner's private key (IdentityFile)
	OwnerPubLine string // its authorized_keys line, pushed into every guest
	ProxyCommand string // how ssh reaches guests through banger, "" for none
}

// newHostKey gives a VM its own SSH host key at create time, so the very
// first connection is verified against known_hosts (no trust on first use).
func (s *Service) newHostKey(v *store.VM) error {
	kp, err := sshkeys.Generate("banger-" + v.Name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.layout.VMDir(v.ID), paths.HostKey), kp.PrivatePEM, 0o600); err != nil {
		return fmt.Errorf("write host key: %w", err)
	}
	v.HostKey = kp.AuthorizedLine("")
	return nil
}

// refreshSSH rewrites the managed known_hosts and the generated ssh_config
// from the VMs that exist now. Both are derived state: rendering them whole
// means a deleted or re-created VM can never leave a stale key behind.
func (s *Service) refreshSSH(ctx context.Context) {
	if s.ssh == nil {
		return
	}
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		s.log.Warn("refresh ssh files", "err", err)
		return
	}
	var hosts []sshkeys.Host
	var entries []sshconfig.Host
	for _, v := range vms {
		if v.HostKey == "" {
			continue
		}
		key, err := sshkeys.ParseAuthorized(v.HostKey)
		if err != nil {
			s.log.Warn("bad host key record", "vm", v.Name, "err", err)
			continue
		}
		names := []string{v.Name, v.Name + ".vm"}
		if v.GuestIP != "" {
			names = append(names, v.GuestIP)
		}
		hosts = append(hosts, sshkeys.Host{Names: names, Key: key})
		entries = append(entries, sshconfig.Host{Name: v.Name})
	}
	if err := sshkeys.WriteKnownHosts(s.layout.KnownHosts, hosts); err != nil {
		s.log.Warn("write known_hosts", "err", err)
	}
	text := sshconfig.Render(entries, sshconfig.Options{
		IdentityFile: s.ssh.OwnerKeyPath, KnownHosts: s.layout.KnownHosts, ProxyCommand: s.ssh.ProxyCommand,
	})
	if err := atomicfile.Write(s.layout.SSHConfig, []byte(text), 0o600); err != nil {
		s.log.Warn("write ssh_config", "err", err)
	}
}

// pushSSH gives a booted guest its host key and the owner's public key.
func (s *Service) pushSSH(ctx context.Context, v store.VM) error {
	if s.ssh == nil || v.HostKey == "" {
		return nil
	}
	key, err := os.ReadFile(filepath.Join(s.layout.VMDir(v.ID), paths.HostKey))
	if err != nil {
		return fmt.Errorf("read host key: %w", err)
	}
	sess, _, err := s.session(ctx, v.ID)
	if err != nil {
		return err
	}
	if err := sess.Put(ctx, guestHostKey, 0o600, key); err != nil {
		return fmt.Errorf("push host key: %w", err)
	}
	if err := sess.Put(ctx, guestAuthorizedKeys, 0o600, []byte(s.ssh.OwnerPubLine+"\n")); err != nil {
		return fmt.Errorf("push authorized key: %w", err)
	}
	return nil
}

// applyFileSync copies the owner's [[file_sync]] entries into a booted
// guest. Problems with one entry (a missing path, a path outside the home,
// an escaping symlink) are notes, not failures: the VM is still usable.
func (s *Service) applyFileSync(ctx context.Context, v store.VM, progress Progress) {
	if len(s.cfg.FileSync) == 0 {
		return
	}
	home, err := os.UserHomeDir()
	if err != nil {
		progress.say("note: file_sync skipped: %v", err)
		return
	}
	sess, _, err := s.session(ctx, v.ID)
	if err != nil {
		progress.say("note: file_sync skipped: %v", err)
		return
	}
	for _, e := range s.cfg.FileSync {
		files, warnings, err := filesync.Resolve(e, home)
		for _, w := range warnings {
			progress.say("note: %s", w)
		}
		if err != nil {
			progress.say("note: %v; skipped", err)
			continue
		}
		for _, f := range files {
			if err := sess.Put(ctx, f.Guest, f.Mode, f.Data); err != nil {
				progress.say("note: file_sync %s -> %s: %v", e.Host, f.Guest, err)
			}
		}
	}
}
