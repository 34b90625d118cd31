package transport

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// portPair stands in for a virtio-serial port: the agent's end of a unix
// stream socketpair polls and reads as the guest's port does. While the
// host end is open it is a connected host; once closed, the agent's end
// polls readable and hung up and reads 0 bytes when nothing is queued,
// as a port does while no host is connected.
func portPair(t *testing.T) (guest, host int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

type waitResult struct {
	prefix []byte
	left   bool
	err    error
}

func startWait(fd int, closed *atomic.Bool) chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		p, l, err := waitForHost(fd, closed.Load)
		ch <- waitResult{p, l, err}
	}()
	return ch
}

// TestWaitForHostIgnoresAPortWithNoHost: with no host connected the port
// polls readable, yet no host has written; the agent keeps waiting instead
// of starting a session that ends at once and reopening the port in a
// busy loop. Closing the listener still ends the wait.
func TestWaitForHostIgnoresAPortWithNoHost(t *testing.T) {
	guest, host := portPair(t)
	unix.Close(host)
	var closed atomic.Bool
	ch := startWait(guest, &closed)
	select {
	case r := <-ch:
		t.Fatalf("waitForHost returned with no host connected: prefix %q left %v err %v", r.prefix, r.left, r.err)
	case <-time.After(6 * idlePoll):
	}
	closed.Store(true)
	select {
	case r := <-ch:
		if !errors.Is(r.err, errClosed) {
			t.Fatalf("after Close: %v, want %v", r.err, errClosed)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("closing the listener did not end the wait")
	}
}

// TestWaitForHostServesAConnectedHost: a connected host that writes is a
// connection, and nothing it wrote is consumed by the wait.
func TestWaitForHostServesAConnectedHost(t *testing.T) {
	guest, host := portPair(t)
	var closed atomic.Bool
	ch := startWait(guest, &closed)
	time.Sleep(2 * idlePoll)
	if _, err := unix.Write(host, []byte("BANGER-SYNC 0123456789abcdef\n")); err != nil {
		t.Fatal(err)
	}
	var r waitResult
	select {
	case r = <-ch:
	case <-time.After(2 * time.Second):
		t.Fatal("a host that wrote was not served")
	}
	if r.err != nil || r.left {
		t.Fatalf("waitForHost = prefix %q left %v err %v", r.prefix, r.left, r.err)
	}
	buf := make([]byte, 64)
	n, _ := unix.Read(guest, buf)
	if got := string(r.prefix) + string(buf[:max(n, 0)]); got != "BANGER-SYNC 0123456789abcdef\n" {
		t.Fatalf("the session would read %q", got)
	}
}

// TestWaitForHostReportsBytesOfAVanishedHost: bytes a host wrote before
// going away, unread, are reported as left behind (the caller reopens the
// port to drop them) rather than served to nobody or waited on forever.
func TestWaitForHostReportsBytesOfAVanishedHost(t *testing.T) {
	guest, host := portPair(t)
	if _, err := unix.Write(host, []byte("BANGER-SYNC 0123456789abcdef\n")); err != nil {
		t.Fatal(err)
	}
	unix.Close(host)
	var closed atomic.Bool
	ch := startWait(guest, &closed)
	select {
	case r := <-ch:
		if r.err != nil || !r.left {
			t.Fatalf("waitForHost = prefix %q left %v err %v, want left", r.prefix, r.left, r.err)
		}
	case <-time.After(2 * time.Second):
		closed.Store(true)
		t.Fatal("bytes of a vanished host were waited on")
	}
}

// TestPortConnReadsPrefixFirst: bytes the wait read are the start of the
// session's stream.
func TestPortConnReadsPrefixFirst(t *testing.T) {
	guest, host := portPair(t)
	if _, err := unix.Write(host, []byte("def")); err != nil {
		t.Fatal(err)
	}
	dup, err := unix.Dup(guest)
	if err != nil {
		t.Fatal(err)
	}
	c := &portConn{File: os.NewFile(uintptr(dup), "port"), pending: []byte("abc"), done: make(chan struct{})}
	defer c.Close()
	var got []byte
	buf := make([]byte, 2)
	for len(got) < 6 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "abcdef" {
		t.Fatalf("read %q, want abcdef", got)
	}
}
