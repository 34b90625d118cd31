package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"banger/internal/agentproto"
)

// connectDialTimeout bounds the guest's dial for the connect op.
const connectDialTimeout = 10 * time.Second

// connectStall ends a connect pipe whose writes towards the host make no
// progress for this long after the host has closed its direction: the
// host has gone away without reading what is left. In nanoseconds, and
// atomic: tests shorten it while pipes of earlier tests still read it.
var connectStall atomic.Int64

func init() { connectStall.Store(int64(30 * time.Second)) }

func stallBound() time.Duration { return time.Duration(connectStall.Load()) }

// connectAddr resolves the connect op's address: "host:port", ":port" or
// "port", with 127.0.0.1 as the default host.
func connectAddr(s string) (string, error) {
	host, port := "127.0.0.1", s
	if strings.Contains(s, ":") {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return "", fmt.Errorf("connect %q: %w", s, err)
		}
		if h != "" {
			host = h
		}
		port = p
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("connect %q: port must be 1-65535", s)
	}
	return net.JoinHostPort(host, port), nil
}

// connect dials the requested address, replies, and then pipes bytes
// between the stream (read through r, which may hold buffered bytes) and
// the TCP connection until both directions are done.
func connect(st net.Conn, r io.Reader, req *agentproto.Request) {
	addr, err := connectAddr(req.Addr)
	if err != nil {
		reply(st, err)
		return
	}
	d := net.Dialer{Timeout: connectDialTimeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		reply(st, fmt.Errorf("connect %s: %w", addr, unwrapDial(err)))
		return
	}
	defer c.Close()
	if err := agentproto.WriteJSONLine(st, agentproto.Reply{OK: true}); err != nil {
		return
	}
	pipe(st, r, c.(*net.TCPConn))
}

// unwrapDial drops the *net.OpError and *os.SyscallError wrapping, whose
// text repeats what the caller already says ("dial tcp ...: connect:").
func unwrapDial(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) && sys.Err != nil {
		err = sys.Err
	}
	return err
}

// pipe copies in both directions. EOF from the host half-closes the TCP
// connection; EOF from the TCP peer closes the stream's write side (a
// yamux Close only sends FIN; reads go on). An error in either direction
// tears both down.
func pipe(st net.Conn, r io.Reader, c *net.TCPConn) {
	var hostDone atomic.Bool
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		_, err := io.Copy(c, r)
		hostDone.Store(true)
		// A write towards the host may already be blocked on a full window:
		// setting the deadline here wakes it, so it cannot wait forever.
		_ = st.SetWriteDeadline(time.Now().Add(stallBound()))
		if err != nil {
			_ = c.Close()
			return
		}
		_ = c.CloseWrite()
	}()

	buf := make([]byte, 32<<10)
	for {
		n, rerr := c.Read(buf)
		if n > 0 {
			if hostDone.Load() {
				_ = st.SetWriteDeadline(time.Now().Add(stallBound()))
			}
			if _, werr := st.Write(buf[:n]); werr != nil {
				_ = c.Close()
				_ = st.SetReadDeadline(time.Unix(1, 0))
				break
			}
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				// The peer reset or we tore it down: end the host side too.
				_ = st.SetReadDeadline(time.Unix(1, 0))
			}
			break
		}
	}
	_ = st.Close() // FIN towards the host
	<-upDone
}
