package transport

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// errClosed is what Accept returns once the listener is closed.
var errClosed = errors.New("virtio-serial listener closed")

// waitForHost blocks on fd, an open virtio-serial port, until a host is
// connected and has written to it, polling closed every idlePoll.
//
// A port with no host connected polls both readable and hung up, and a
// read on it returns 0 bytes at once: being readable is therefore no sign
// of a host. Taking it for one would start a session that ends at once,
// reopen the port and do it again, a busy loop for as long as no host is
// connected, and every turn of it a close and open of the port that the
// VMM sees.
//
// While hung up, only a read tells an empty port from one that still
// holds bytes of a host that wrote and went away before the agent looked.
// Those are returned with left set: the caller reopens the port, which
// drops them, as a vsock guest would see such a connection end. If a host
// connected meanwhile the bytes read are its own: they are returned as
// prefix, the start of its stream, with left unset.
func waitForHost(fd int, closed func() bool) (prefix []byte, left bool, err error) {
	for {
		if closed() {
			return nil, false, errClosed
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(idlePoll/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil, false, fmt.Errorf("poll: %w", err)
		}
		if n <= 0 {
			continue
		}
		re := pfd[0].Revents
		if re&unix.POLLHUP == 0 {
			if re&unix.POLLIN != 0 {
				return nil, false, nil
			}
			time.Sleep(idlePoll) // an error condition polls at once
			continue
		}
		buf := make([]byte, 4096)
		m, err := unix.Read(fd, buf)
		if m > 0 {
			return buf[:m], !hostConnected(fd), nil
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // a host connected since the poll and has not written yet
		}
		if err != nil {
			return nil, false, fmt.Errorf("read: %w", err)
		}
		time.Sleep(idlePoll) // no host: poll would return at once again
	}
}

// hostConnected reports whether a host is connected to the port fd now.
func hostConnected(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && pfd[0].Revents&unix.POLLHUP == 0
	}
}
