package agentclient_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agentclient"
	"banger/internal/agentproto"
	"banger/internal/testutil"
)

// hostileGuest is the guest end of a session run by a test: the sync
// handshake, then a yamux server the test drives directly.
func hostileGuest(t *testing.T) (*agentclient.Session, *yamux.Session) {
	t.Helper()
	hostEnd, guestEnd := testutil.SocketPair(t)
	type res struct {
		mux *yamux.Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		br, err := agentproto.GuestHandshake(guestEnd)
		if err != nil {
			ch <- res{err: err}
			return
		}
		cfg := yamux.DefaultConfig()
		cfg.LogOutput = io.Discard
		mux, err := yamux.Server(struct {
			io.Reader
			io.WriteCloser
		}{br, guestEnd}, cfg)
		ch <- res{mux, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := agentclient.Handshake(ctx, hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		_ = r.mux.Close()
	})
	return s, r.mux
}

// writeFor writes up to n bytes to w until d passes, and says how many
// went out: the sender blocks once the receiver's window is full.
func writeFor(st *yamux.Stream, n int, d time.Duration) int {
	_ = st.SetWriteDeadline(time.Now().Add(d))
	w, _ := st.Write(make([]byte, n))
	return w
}

// A guest that opens streams of its own and fills them gets its session
// closed at the first one; what it managed to send stays far below what
// yamux's defaults would have buffered (a 256-stream backlog, each with a
// 256 KiB window: 64 MiB).
func TestGuestOpenedStreamsEndTheSession(t *testing.T) {
	s, guest := hostileGuest(t)
	const attempts = 64
	sent := 0
	for range attempts {
		st, err := guest.OpenStream()
		if err != nil {
			break
		}
		sent += writeFor(st, agentclient.StreamWindow, 300*time.Millisecond)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session survived a guest that opened streams")
	}
	if limit := 8 * agentclient.StreamWindow; sent > limit {
		t.Fatalf("the guest sent %d bytes on streams of its own; want at most %d", sent, limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := s.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "the guest opened a stream") {
		t.Fatalf("Ping after the guest opened a stream = %v, want the reason the session ended", err)
	}
}

// The host opens at most MaxStreams streams at once, counting those it has
// closed and the guest has not: a guest that holds every stream open gets
// no more buffers from bangerd.
func TestOpenStreamsAreCapped(t *testing.T) {
	s, guest := hostileGuest(t)
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			st, err := guest.AcceptStream()
			if err != nil {
				return
			}
			var req agentproto.Request
			if agentproto.ReadJSONLine(st, &req) != nil {
				return
			}
			_ = agentproto.WriteJSONLine(st, agentproto.Reply{OK: true})
			mu.Lock()
			held = append(held, st) // never closed by the guest
			mu.Unlock()
		}
	}()
	defer func() { _ = guest.Close(); <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conns []net.Conn
	for i := range agentclient.MaxStreams {
		c, err := s.Connect(ctx, "127.0.0.1:1")
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, agentclient.MaxStreams, err)
		}
		conns = append(conns, c)
	}
	if _, err := s.Connect(ctx, "127.0.0.1:1"); !errors.Is(err, agentclient.ErrTooManyStreams) {
		t.Fatalf("stream %d = %v, want ErrTooManyStreams", agentclient.MaxStreams+1, err)
	}
	// Closed on the host side only: the guest can still send on it, so it
	// still counts.
	_ = conns[0].Close()
	if _, err := s.Ping(ctx); !errors.Is(err, agentclient.ErrTooManyStreams) {
		t.Fatalf("with a stream the guest keeps open: %v, want ErrTooManyStreams", err)
	}
	// Once the guest closes it too, the slot is free again.
	mu.Lock()
	_ = held[0].Close()
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := s.Connect(ctx, "127.0.0.1:1")
		if err == nil {
			_ = c.Close()
			break
		}
		if !errors.Is(err, agentclient.ErrTooManyStreams) || time.Now().After(deadline) {
			t.Fatalf("after both sides closed a stream: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range conns[1:] {
		_ = c.Close()
	}
}

// On a stream bangerd reads slowly, the guest can get at most one window
// ahead of it: its writes block there instead of filling bangerd's memory.
func TestUnreadStreamHoldsAtMostOneWindow(t *testing.T) {
	s, guest := hostileGuest(t)
	type res struct {
		sent int
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		st, err := guest.AcceptStream()
		if err != nil {
			ch <- res{err: err}
			return
		}
		var req agentproto.Request
		if err := agentproto.ReadJSONLine(st, &req); err != nil {
			ch <- res{err: err}
			return
		}
		if err := agentproto.WriteJSONLine(st, agentproto.Reply{OK: true}); err != nil {
			ch <- res{err: err}
			return
		}
		ch <- res{sent: writeFor(st, 8<<20, 2*time.Second)}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.Connect(ctx, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Read a little, as a slow reader does: every read lets yamux grant
	// the guest more window, up to the configured maximum.
	buf := make([]byte, 4096)
	for range 4 {
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if limit := agentclient.StreamWindow + 4*len(buf); r.sent > limit {
		t.Fatalf("the guest got %d bytes ahead of bangerd's reads; want at most %d", r.sent, limit)
	}
	if r.sent < agentclient.StreamWindow/2 {
		t.Fatalf("the guest could send only %d bytes; the window should let it send %d", r.sent, agentclient.StreamWindow)
	}
}

// An error text from the guest reaches bangerd's errors (and from there the
// CLI and the log) with its escape sequences made visible, not acted on.
func TestGuestErrorIsPrintable(t *testing.T) {
	s, guest := hostileGuest(t)
	go func() {
		st, err := guest.AcceptStream()
		if err != nil {
			return
		}
		var req agentproto.Request
		_ = agentproto.ReadJSONLine(st, &req)
		_ = agentproto.WriteJSONLine(st, agentproto.Reply{Error: "no\x1b]0;owned\x07 \x1b[2Jsuch\u202e op\n"})
		_ = st.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.Ping(ctx)
	if !agentclient.IsGuestError(err) {
		t.Fatalf("Ping = %v, want a guest error", err)
	}
	if got, want := err.Error(), `no\x1b]0;owned\a \x1b[2Jsuch\u202e op\n`; got != want {
		t.Fatalf("guest error = %q, want %q", got, want)
	}
}
