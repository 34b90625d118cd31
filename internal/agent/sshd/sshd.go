// Package sshd is the SSH server the guest agent runs inside every VM, so that
// a sandbox is reachable over SSH (terminal, exec, scp, sftp, rsync, local
// port forwarding, VS Code Remote-SSH) even when its image ships no sshd and
// has no network to install one.
//
// It owns the SSH protocol side only: authentication, session channels
// (pty, shell, exec, env, signals, the in-process sftp subsystem),
// direct-tcpip forwarding (ssh -L) and global requests. Host keys and the
// authorized keys are supplied by the caller; children are started through a
// Starter so that an agent running as PID 1 can route exits through its own
// reaper. Not offered: remote forwarding (tcpip-forward, ssh -R), agent and
// X11 forwarding; pty-req terminal modes are ignored (the kernel defaults
// apply). Shells are login shells (argv[0] "-bash"); exec runs `Shell -c
// CMD` as OpenSSH does, so scp -O, rsync and editor remotes behave as usual.
//
// Single-user model: a guest is a single-user sandbox. Only public-key
// authentication is offered (no password, no keyboard-interactive), and any
// user name the client presents is accepted and mapped to the identity the
// agent runs as, root in a guest: HOME=/root, USER=root, cwd /root when it
// exists. There is no privilege separation because there is no one to
// separate from; whoever holds an authorized key owns the guest.
package sshd

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("sshd: server closed")

const (
	// handshakeTimeout bounds the key exchange and authentication of a
	// connection, so a silent peer cannot hold a goroutine forever.
	handshakeTimeout = 30 * time.Second
	// dialTimeout bounds a direct-tcpip dial inside the guest.
	dialTimeout = 10 * time.Second
	// serverVersion is the identification string sent to clients.
	serverVersion = "SSH-2.0-banger"
)

// Config configures a Server.
type Config struct {
	// HostKeys are the server's host keys; at least one is required.
	HostKeys []ssh.Signer
	// AuthorizedKeys returns the keys allowed to log in. It is called on
	// every authentication attempt, so the keys can change at run time.
	AuthorizedKeys func() ([]ssh.PublicKey, error)
	// Shell runs shells and exec commands. Default: /bin/bash if present,
	// else /bin/sh.
	Shell string
	// Home is the user's home: HOME and the working directory of shells,
	// exec and sftp. Default: /root (the guest's user is root).
	Home string
	// Env is added to the base environment of every child, after PATH,
	// HOME, USER, LOGNAME and SHELL (so it may override them).
	Env []string
	// Logf logs connection-level events. Default: discard.
	Logf func(format string, args ...any)
	// Dial opens direct-tcpip (ssh -L) connections. Default: net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Starter starts children and reports their exit. Default: exec.Cmd.Wait;
	// an agent running as PID 1 must supply one backed by its reaper.
	Starter Starter
}

// Server is an SSH server. It is safe for concurrent use.
type Server struct {
	cfg  Config
	ssh  *ssh.ServerConfig
	home string

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

// New validates cfg and returns a server.
func New(cfg Config) (*Server, error) {
	if len(cfg.HostKeys) == 0 {
		return nil, errors.New("configure sshd: no host keys")
	}
	if cfg.AuthorizedKeys == nil {
		return nil, errors.New("configure sshd: no authorized keys source")
	}
	if cfg.Shell == "" {
		cfg.Shell = defaultShell()
	}
	if cfg.Home == "" {
		cfg.Home = homeDir
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Dial == nil {
		d := &net.Dialer{}
		cfg.Dial = d.DialContext
	}
	if cfg.Starter == nil {
		cfg.Starter = WaitStarter{}
	}
	s := &Server{
		cfg:       cfg,
		home:      cfg.Home,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
	}
	sc := &ssh.ServerConfig{
		PublicKeyCallback: s.authenticate,
		ServerVersion:     serverVersion,
	}
	for _, k := range cfg.HostKeys {
		sc.AddHostKey(k)
	}
	s.ssh = sc
	return s, nil
}

// authenticate accepts any user name with an authorized key.
func (s *Server) authenticate(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	keys, err := s.cfg.AuthorizedKeys()
	if err != nil {
		s.cfg.Logf("sshd: read authorized keys: %v", err)
		return nil, fmt.Errorf("read authorized keys: %w", err)
	}
	want := key.Marshal()
	for _, k := range keys {
		if subtle.ConstantTimeCompare(k.Marshal(), want) == 1 {
			return &ssh.Permissions{Extensions: map[string]string{
				"pubkey-fp": ssh.FingerprintSHA256(key),
			}}, nil
		}
	}
	return nil, fmt.Errorf("key %s not authorized for %q", ssh.FingerprintSHA256(key), meta.User())
}

// Serve accepts connections on l until l fails or the server is closed. It
// always returns a non-nil error; after Close it is ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			return fmt.Errorf("accept: %w", err)
		}
		if !s.track(c) {
			_ = c.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// ServeConn serves one already-accepted connection (for instance one from
// the agent's own transport) and returns when it ends. It closes c.
func (s *Server) ServeConn(c net.Conn) {
	if !s.track(c) {
		_ = c.Close()
		return
	}
	defer s.untrack(c)
	s.serveConn(c)
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Close stops the listeners, drops every connection (killing the processes
// of its sessions) and waits for all handlers to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		_ = l.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(c, s.ssh)
	if err != nil {
		s.cfg.Logf("sshd: handshake with %s: %v", c.RemoteAddr(), err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.cfg.Logf("sshd: %s logged in from %s with key %s", sconn.User(), sconn.RemoteAddr(), sconn.Permissions.Extensions["pubkey-fp"])

	ctx, cancel := context.WithCancel(context.Background())
	var handlers sync.WaitGroup
	handlers.Add(1)
	go func() {
		defer handlers.Done()
		globalRequests(reqs)
	}()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				s.session(sconn, nc)
			}()
		case "direct-tcpip":
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				s.directTCPIP(ctx, nc)
			}()
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "unsupported channel type")
		}
	}
	// The channel stream ends when the connection does.
	cancel()
	_ = sconn.Close()
	handlers.Wait()
}

// globalRequests answers keepalives and refuses everything else, including
// tcpip-forward (ssh -R).
func globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		if !r.WantReply {
			continue
		}
		_ = r.Reply(r.Type == "keepalive@openssh.com", nil)
	}
}

// LoadHostKey reads a PEM or OpenSSH private key (unencrypted) from path.
func LoadHostKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	k, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse host key %s: %w", path, err)
	}
	return k, nil
}

// ParseAuthorizedKeys parses authorized_keys content. Blank lines and
// comments are skipped. A key carrying options (command=, from=, restrict,
// ...) is skipped too: this server cannot enforce them, and granting such a
// key unrestricted access would exceed what the file says. An invalid line
// is an error.
func ParseAuthorizedKeys(b []byte) ([]ssh.PublicKey, error) {
	var keys []ssh.PublicKey
	for n, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, _, opts, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil {
			return nil, fmt.Errorf("parse authorized key on line %d: %w", n+1, err)
		}
		if len(opts) > 0 {
			continue
		}
		keys = append(keys, k)
	}
	return keys, nil
}
