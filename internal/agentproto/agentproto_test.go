package agentproto

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
)

func TestHandshakeSkipsStaleBytes(t *testing.T) {
	host, guest := testutil.SocketPair(t)
	defer host.Close()
	defer guest.Close()
	type res struct {
		rest string
		err  error
	}
	done := make(chan res, 1)
	go func() {
		// Stale garbage and a stale SYNC from an earlier connection arrive
		// before the real one; the guest must still end up in sync.
		br, err := GuestHandshake(guest)
		if err != nil {
			done <- res{err: err}
			return
		}
		b := make([]byte, 5)
		_, err = io.ReadFull(br, b)
		done <- res{rest: string(b), err: err}
	}()
	// The stale bytes are queued before the real handshake starts, as they
	// are on a port that outlived an earlier connection.
	if _, err := host.Write([]byte("\x00\x01junk from before\nBANGER-SYNC 0000000000000000\n")); err != nil {
		t.Fatal(err)
	}
	// Drain the guest's ACK for the stale SYNC from the host side as part of
	// the real handshake.
	if err := HostHandshake(host, "0123456789abcdef", 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := host.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.rest != "hello" {
		t.Fatalf("guest after handshake: %q, %v", r.rest, r.err)
	}
}

func TestHandshakeRepeatedSync(t *testing.T) {
	host, guest := testutil.SocketPair(t)
	defer host.Close()
	defer guest.Close()
	go func() {
		// A slow guest: the host repeats SYNC several times first.
		time.Sleep(60 * time.Millisecond)
		br, err := GuestHandshake(guest)
		if err != nil {
			return
		}
		b := make([]byte, 2)
		if _, err := io.ReadFull(br, b); err == nil {
			_, _ = guest.Write(b)
		}
	}()
	if err := HostHandshake(host, NewNonce(), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := host.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(host, b); err != nil || string(b) != "ok" {
		t.Fatalf("echo after handshake = %q, %v", b, err)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, FrameStdout, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSONFrame(&buf, FrameExit, Exit{Code: 7}); err != nil {
		t.Fatal(err)
	}
	typ, p, err := ReadFrame(&buf)
	if err != nil || typ != FrameStdout || string(p) != "abc" {
		t.Fatalf("frame 1 = %d %q %v", typ, p, err)
	}
	typ, p, err = ReadFrame(&buf)
	if err != nil || typ != FrameExit || !strings.Contains(string(p), `"code":7`) {
		t.Fatalf("frame 2 = %d %q %v", typ, p, err)
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{FrameStdout, 0xff, 0xff, 0xff, 0xff})); err == nil {
		t.Fatal("oversized frame accepted")
	}
}

func TestReadJSONLineBounded(t *testing.T) {
	var r Request
	long := strings.Repeat("x", MaxLine+10) + "\n"
	if err := ReadJSONLine(strings.NewReader(long), &r); err == nil {
		t.Fatal("over-long line accepted")
	}
	if err := ReadJSONLine(strings.NewReader(`{"op":"ping"}`+"\nrest"), &r); err != nil || r.Op != OpPing {
		t.Fatalf("ReadJSONLine = %+v, %v", r, err)
	}
}
