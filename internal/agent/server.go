// Package agent is the guest agent's request server: it accepts host
// connections from a transport, runs the sync handshake and a yamux server
// session on each, and serves the ops of the agentproto contract (ping, exec,
// put, get, hostname, shutdown, ports, connect, stats) one stream per request.
//
// Boot roles live in subpackages: initramfs (stage one, /init), pid1 (the
// agent as the real root's init) and the transport and reaper plumbing shared
// by every role.
package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"banger/internal/agent/reaper"
	"banger/internal/agent/transport"
	"banger/internal/agentproto"
)

// Modes reported by ping.
const (
	ModePID1    = "pid1"
	ModeService = "service"
)

// HandshakeTimeout bounds a host's handshake, from the connection to the
// guest's READY. Hosts finish in milliseconds; a var for tests.
var HandshakeTimeout = 30 * time.Second

// Logger writes to the console with the agent's prefix. Only errors and the
// single ready line go here: the console is the user's boot log.
var Logger = log.New(os.Stderr, "banger-agent: ", 0)

// Server serves agent requests.
type Server struct {
	Mode    string // ModePID1 or ModeService
	Version string // agent build version, reported by ping
	Reaper  *reaper.Reaper
	// Shutdown powers the guest off (or reboots it). It runs in its own
	// goroutine after the reply to the shutdown op has been sent.
	Shutdown func(reboot bool)
}

// Serve accepts connections from l until Accept fails.
func (s *Server) Serve(l transport.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept host connection: %w", err)
		}
		go func() {
			defer c.Close()
			if err := s.ServeConn(c); err != nil && !isDisconnect(err) {
				Logger.Printf("session: %v", err)
			}
		}()
	}
}

// sessionConn reads through the handshake's buffered reader (which may hold
// bytes past the GO line) and writes and closes the raw connection.
type sessionConn struct {
	r io.Reader
	io.WriteCloser
}

func (c sessionConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ServeConn runs the guest handshake on c and then a yamux server session
// until the host goes away. It does not close c on a handshake failure.
func (s *Server) ServeConn(c io.ReadWriteCloser) error {
	// A host that goes away in the middle of the handshake must not hold
	// the channel: on a virtio-serial port the guest's reply would block
	// until some later host reads it, and the port would serve no one.
	timer := time.AfterFunc(HandshakeTimeout, func() { c.Close() })
	br, err := agentproto.GuestHandshake(c)
	if !timer.Stop() {
		return fmt.Errorf("handshake: not done within %s", HandshakeTimeout)
	}
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	// The transport reports a vanished host (EOF on virtio-serial, a closed
	// vsock); guest-side pings would only risk closing a healthy session on
	// a slow TCG guest. The host may still ping and the guest answers.
	cfg.EnableKeepAlive = false
	sess, err := yamux.Server(sessionConn{r: br, WriteCloser: c}, cfg)
	if err != nil {
		return fmt.Errorf("start yamux session: %w", err)
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if sess.IsClosed() {
				return nil
			}
			return fmt.Errorf("accept stream: %w", err)
		}
		go s.handleStream(st)
	}
}

func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, yamux.ErrSessionShutdown)
}

func (s *Server) handleStream(st net.Conn) {
	defer st.Close()
	br := bufio.NewReaderSize(st, 32<<10)
	var req agentproto.Request
	if err := agentproto.ReadJSONLine(br, &req); err != nil {
		if !isDisconnect(err) {
			_ = agentproto.WriteJSONLine(st, agentproto.Reply{Error: fmt.Sprintf("read request: %v", err)})
		}
		return
	}
	switch req.Op {
	case agentproto.OpPing:
		s.ping(st)
	case agentproto.OpExec:
		s.exec(st, br, &req)
	case agentproto.OpPut:
		putFile(st, br, &req)
	case agentproto.OpGet:
		getFile(st, &req)
	case agentproto.OpHostname:
		reply(st, SetHostname(req.Hostname, true))
	case agentproto.OpShutdown:
		s.shutdown(st, req.Reboot)
	case agentproto.OpPorts:
		ports(st)
	case agentproto.OpConnect:
		connect(st, br, &req)
	case agentproto.OpStats:
		stats(st)
	default:
		_ = agentproto.WriteJSONLine(st, agentproto.Reply{Error: fmt.Sprintf("unknown op %q", req.Op)})
	}
}

// reply sends OK or the error.
func reply(w io.Writer, err error) {
	r := agentproto.Reply{OK: err == nil}
	if err != nil {
		r.Error = err.Error()
	}
	_ = agentproto.WriteJSONLine(w, r)
}

func (s *Server) ping(w io.Writer) {
	host, _ := os.Hostname()
	_ = agentproto.WriteJSONLine(w, agentproto.Reply{
		OK:       true,
		Version:  agentproto.Version,
		Agent:    s.Version,
		Mode:     s.Mode,
		Hostname: host,
		Kernel:   KernelRelease(),
	})
}

func (s *Server) shutdown(st net.Conn, reboot bool) {
	if s.Shutdown == nil {
		reply(st, errors.New("shutdown: not supported in this mode"))
		return
	}
	reply(st, nil)
	_ = st.Close()
	// Give the reply a moment to leave through the session before the
	// guest starts tearing processes down.
	go func() {
		time.Sleep(100 * time.Millisecond)
		s.Shutdown(reboot)
	}()
}

// KernelRelease returns uname -r.
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

var hostnameMu sync.Mutex

// SetHostname sets the kernel hostname and, if persist, writes /etc/hostname
// (best-effort: the root may be read-only).
func SetHostname(name string, persist bool) error {
	if err := validHostname(name); err != nil {
		return err
	}
	hostnameMu.Lock()
	defer hostnameMu.Unlock()
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set hostname %q: %w", name, err)
	}
	if persist {
		_ = os.WriteFile("/etc/hostname", []byte(name+"\n"), 0o644)
	}
	return nil
}

func validHostname(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("invalid hostname %q: length must be 1..64", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.'
		if !ok {
			return fmt.Errorf("invalid hostname %q: only letters, digits, '-' and '.'", name)
		}
	}
	return nil
}
