package sshd

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"

	"golang.org/x/crypto/ssh"
)

// directTCPIP serves one ssh -L connection: it dials the requested address
// inside the guest and copies both ways, half-closing each direction on EOF.
// ctx ends with the SSH connection, which tears the forward down.
func (s *Server) directTCPIP(ctx context.Context, nc ssh.NewChannel) {
	var m struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &m); err != nil || m.Port > 65535 {
		_ = nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	addr := net.JoinHostPort(m.Host, strconv.FormatUint(uint64(m.Port), 10))
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := s.cfg.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "connect "+addr+": "+err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		_ = conn.Close()
		return
	}
	// The request stream ends when the channel is closed (not merely at
	// EOF): then the guest side is closed too, even if it never sends EOF.
	closed := make(chan struct{})
	go func() {
		ssh.DiscardRequests(reqs)
		close(closed)
	}()

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, ch)
		closeWrite(conn)
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(ch, conn)
		_ = ch.CloseWrite()
	}()
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	case <-closed:
	}
	_ = conn.Close()
	_ = ch.Close()
	<-done
	<-closed
}

// closeWrite half-closes c when it supports that, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
