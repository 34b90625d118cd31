// Package agentclient is bangerd's side of the guest agent protocol: it
// turns a raw transport connection into a multiplexed session and offers one
// method per agent op.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agentproto"
	"banger/internal/textsafe"
)

// What one VM's agent can make bangerd hold. yamux buffers what a guest
// sends on a stream until bangerd reads it, up to the stream's receive
// window; yamux's defaults (256 streams waiting to be accepted, each with a
// window) would let a guest park about 64 MiB in bangerd.
const (
	// MaxStreams bounds the streams one session has open at once: requests,
	// exec sessions and forwarded connections, and streams closed on the
	// host side that the guest has not closed yet. So a guest holds at most
	// MaxStreams x StreamWindow of bangerd's memory.
	MaxStreams = 32
	// StreamWindow is each stream's receive window, the least yamux allows:
	// what a guest can send on a stream bangerd is not reading.
	StreamWindow = 256 << 10
	// acceptBacklog bounds the guest's streams yamux queues before they are
	// refused (the guest never has a reason to open one), and equally the
	// host's opens the guest has not acknowledged yet.
	acceptBacklog = 4
)

// ErrTooManyStreams is returned by Open when MaxStreams streams are open.
var ErrTooManyStreams = fmt.Errorf("%d agent streams are open, the most one VM may have; end some exec or forward sessions", MaxStreams)

// Session is an established agent session.
type Session struct {
	conn net.Conn
	mux  *yamux.Session

	openMu sync.Mutex             // makes the MaxStreams check and the open one step
	ended  atomic.Pointer[string] // why bangerd ended the session, if it did
}

// Handshake runs the sync handshake on conn (bounded by ctx) and starts the
// multiplexed session. conn is closed on failure.
func Handshake(ctx context.Context, conn net.Conn) (*Session, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	err := agentproto.HostHandshake(conn, agentproto.NewNonce(), 100*time.Millisecond)
	stop()
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("agent handshake: %w", ctx.Err())
		}
		return nil, fmt.Errorf("agent handshake: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = 10 * time.Second
	cfg.ConnectionWriteTimeout = 30 * time.Second
	cfg.AcceptBacklog = acceptBacklog
	cfg.MaxStreamWindowSize = StreamWindow
	mux, err := yamux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent session: %w", err)
	}
	s := &Session{conn: conn, mux: mux}
	go s.refuseGuestStreams()
	return s, nil
}

// refuseGuestStreams ends the session when the guest opens a stream: the
// host opens every stream of the protocol, so only a hostile or broken
// guest does, and closing the session drops all it has sent. The next
// request reconnects.
func (s *Session) refuseGuestStreams() {
	st, err := s.mux.AcceptStream()
	if err != nil {
		return // the session ended
	}
	why := "the guest opened a stream, which the agent protocol never does"
	s.ended.Store(&why)
	_ = st.Close()
	_ = s.mux.Close()
}

// Close ends the session.
func (s *Session) Close() error { return s.mux.Close() }

// Closed reports whether the session has ended.
func (s *Session) Closed() bool { return s.mux.IsClosed() }

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Open opens a stream, sends req and reads the guest's reply. On a guest
// error the stream is closed and the error returned.
func (s *Session) Open(ctx context.Context, req agentproto.Request) (net.Conn, agentproto.Reply, error) {
	var rep agentproto.Reply
	st, err := s.openStream()
	if err != nil {
		return nil, rep, fmt.Errorf("open agent stream: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := agentproto.WriteJSONLine(st, req); err != nil {
		st.Close()
		return nil, rep, fmt.Errorf("send %s request: %w", req.Op, err)
	}
	if err := agentproto.ReadJSONLine(st, &rep); err != nil {
		st.Close()
		return nil, rep, fmt.Errorf("read %s reply: %w", req.Op, err)
	}
	_ = st.SetDeadline(time.Time{})
	if !rep.OK {
		st.Close()
		return nil, rep, &GuestError{Op: req.Op, Msg: rep.Error}
	}
	return st, rep, nil
}

// openStream opens a stream unless MaxStreams are open. yamux counts a
// stream until both sides have closed it, so one the guest keeps open
// after bangerd is done with it still counts.
func (s *Session) openStream() (*yamux.Stream, error) {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if s.mux.NumStreams() >= MaxStreams {
		return nil, ErrTooManyStreams
	}
	st, err := s.mux.OpenStream()
	if err != nil {
		if why := s.ended.Load(); why != nil {
			return nil, fmt.Errorf("%w: bangerd ended it: %s", err, *why)
		}
		return nil, err
	}
	return st, nil
}

// GuestError is an error the agent reported. Msg is the guest's text as
// sent; Error makes it printable on one line.
type GuestError struct {
	Op  string
	Msg string
}

func (e *GuestError) Error() string { return textsafe.Line(e.Msg) }

// IsGuestError reports whether err came from the agent rather than the
// transport.
func IsGuestError(err error) bool {
	var g *GuestError
	return errors.As(err, &g)
}

// IsUnknownOp reports whether err is an agent's refusal of an op it
// predates: ops are only ever added, so an older agent in a running VM
// answers a newer one this way.
func IsUnknownOp(err error) bool {
	var g *GuestError
	return errors.As(err, &g) && strings.HasPrefix(g.Msg, "unknown op ")
}

// Ping checks the agent answers.
func (s *Session) Ping(ctx context.Context) (agentproto.Reply, error) {
	st, rep, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpPing})
	if err != nil {
		return rep, err
	}
	st.Close()
	return rep, nil
}

// Shutdown asks the guest to power off.
func (s *Session) Shutdown(ctx context.Context) error {
	st, _, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpShutdown})
	if err != nil {
		return err
	}
	st.Close()
	return nil
}

// Reboot asks the guest to restart. bangerd stops a VM this way when its
// VMM exits on a guest reboot but not on a power-off.
func (s *Session) Reboot(ctx context.Context) error {
	st, _, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpShutdown, Reboot: true})
	if err != nil {
		return err
	}
	st.Close()
	return nil
}

// Exec starts a command; the returned stream carries exec frames.
func (s *Session) Exec(ctx context.Context, req agentproto.Request) (net.Conn, error) {
	req.Op = agentproto.OpExec
	st, _, err := s.Open(ctx, req)
	return st, err
}

// Put writes data to path in the guest.
func (s *Session) Put(ctx context.Context, path string, mode uint32, data []byte) error {
	st, _, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpPut, Path: path, Mode: mode, Size: int64(len(data)), Mkdirs: true})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Write(data); err != nil {
		return fmt.Errorf("put %s: %w", path, err)
	}
	var rep agentproto.Reply
	if err := agentproto.ReadJSONLine(st, &rep); err != nil {
		return fmt.Errorf("put %s: %w", path, err)
	}
	if !rep.OK {
		return &GuestError{Op: agentproto.OpPut, Msg: rep.Error}
	}
	return nil
}

// Ports lists the guest's listening TCP sockets and bound UDP sockets.
// The list holds at most agentproto.MaxPorts entries.
func (s *Session) Ports(ctx context.Context) ([]agentproto.Port, error) {
	st, rep, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpPorts})
	if err != nil {
		return nil, err
	}
	st.Close()
	return rep.Ports, nil
}

// Stats reads the guest's own view of its memory, load, uptime, processes
// and filesystems. An agent without the op fails it; see IsUnknownOp.
func (s *Session) Stats(ctx context.Context) (agentproto.Stats, error) {
	st, rep, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpStats})
	if err != nil {
		return agentproto.Stats{}, err
	}
	st.Close()
	if rep.Stats == nil {
		return agentproto.Stats{}, errors.New("read stats reply: no stats in it")
	}
	return *rep.Stats, nil
}

// Connect asks the guest to open a TCP connection to addr ("host:port",
// ":port" or "port"; host defaults to 127.0.0.1) in its own network
// namespace. ctx bounds the dial; the returned connection is a raw byte
// pipe to the guest's peer, not bound by ctx. It is a *Conn, so it has
// CloseWrite for a half-close.
func (s *Session) Connect(ctx context.Context, addr string) (net.Conn, error) {
	st, _, err := s.Open(ctx, agentproto.Request{Op: agentproto.OpConnect, Addr: addr})
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: st}, nil
}

// Conn is the host end of a connect pipe. CloseWrite half-closes it: the
// guest shuts down the write side of its TCP connection and bytes keep
// flowing back. Close ends it: reads stop, and the guest's connection is
// shut as soon as the guest notices (at once for a peer that closes in turn,
// after a bounded stall otherwise).
type Conn struct {
	net.Conn // the agent stream
	closed   atomic.Bool
}

// CloseWrite sends EOF to the guest's peer.
func (c *Conn) CloseWrite() error {
	// A yamux stream's Close only ends our direction; reads go on.
	return c.Conn.Close()
}

// Close closes both directions. Blocked and later reads return
// net.ErrClosed.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	_ = c.SetReadDeadline(time.Unix(1, 0))
	return c.Conn.Close()
}

// Read reads from the guest's peer.
func (c *Conn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, err
}

// Write writes to the guest's peer.
func (c *Conn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}
