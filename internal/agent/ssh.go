package agent

import (
	"net"
	"os"

	"golang.org/x/crypto/ssh"

	"banger/internal/agent/reaper"
	"banger/internal/agent/sshd"
)

// Where bangerd pushes the guest's SSH material at every boot (on the /run
// tmpfs; nothing touches the image).
const (
	sshHostKeyPath    = "/run/banger/ssh/ssh_host_ed25519_key"
	sshAuthorizedPath = "/run/banger/ssh/authorized_keys"
)

// StartSSH serves SSH on the guest's port 22, so every image has SSH even
// without an sshd of its own. If the port is taken (the image runs its own
// sshd), that one is used instead.
func StartSSH(r *reaper.Reaper) {
	// All interfaces on purpose: this runs inside the guest, and SSH must
	// answer on the guest's bridge address as well as on loopback.
	l, err := net.Listen("tcp", ":22") //nolint:gosec // G102: see above

	if err != nil {
		Logger.Printf("ssh: port 22 is taken (%v); the image's own sshd serves it", err)
		return
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(c, r)
		}
	}()
}

// serveSSH loads the host key per connection: bangerd pushes it only once
// the agent answers, so it may appear after the listener.
func serveSSH(c net.Conn, r *reaper.Reaper) {
	key, err := sshd.LoadHostKey(sshHostKeyPath)
	if err != nil {
		c.Close()
		return
	}
	srv, err := sshd.New(sshd.Config{
		HostKeys: []ssh.Signer{key},
		AuthorizedKeys: func() ([]ssh.PublicKey, error) {
			b, err := os.ReadFile(sshAuthorizedPath)
			if err != nil {
				return nil, err
			}
			return sshd.ParseAuthorizedKeys(b)
		},
		Starter: sshd.ReaperStarter(r),
	})
	if err != nil {
		Logger.Printf("ssh: %v", err)
		c.Close()
		return
	}
	srv.ServeConn(c)
	_ = srv.Close()
}
