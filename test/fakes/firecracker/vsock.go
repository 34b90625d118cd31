package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/agentproto"
)

// Hybrid vsock emulation. Firecracker listens on uds_path; a host client
// sends "CONNECT <port>\n" and gets "OK <host port>\n" once the guest
// accepted, or a closed connection when nothing listens on that port.
//
// The emulated guest has no vsock device: its agent sits on a virtio-serial
// port, and only the agent port (agentproto.VsockPort) is reachable. A
// virtio-serial port carries one host connection at a time, so a new
// CONNECT replaces the previous connection; each CONNECT gets a fresh
// connection to the port from the sidecar, so the guest sees the host
// hang up and reconnect, exactly as with bangerd reconnecting under QEMU.

const (
	connectTimeout = 10 * time.Second
	maxConnectLine = 32
)

type vsockDev struct {
	cfg Vsock
	ln  *net.UnixListener
}

// agentChannel is the single host connection to the guest agent.
type agentChannel struct {
	mu       sync.Mutex
	cur      *splice
	nextPort uint32
}

func (m *machine) serveVsock(ln *net.UnixListener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // listener closed (vsock reconfigured)
		}
		go m.handleVsock(c)
	}
}

func (m *machine) handleVsock(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(connectTimeout))
	port, err := readConnect(c)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if port != agentproto.VsockPort || !m.running() {
		c.Close() // nothing listens there: Firecracker resets the connection
		return
	}

	a := &m.agent
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur != nil {
		a.cur.close()
		a.cur = nil
	}
	agent, err := m.backend.Agent()
	if err != nil {
		m.log.errorf("vsock: connect to the guest agent: %v", err)
		c.Close()
		return
	}
	hostPort := a.nextPort
	a.nextPort++
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		c.Close()
		agent.Close()
		return
	}
	s := &splice{a: c, b: agent}
	a.cur = s
	go s.run()
}

// readConnect reads the "CONNECT <port>\n" line byte by byte, so that no
// byte of the stream after it is consumed.
func readConnect(r io.Reader) (uint32, error) {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("read connect line: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) > maxConnectLine {
			return 0, errors.New("read connect line: too long")
		}
	}
	f := strings.Fields(string(line))
	if len(f) != 2 || !strings.EqualFold(f[0], "CONNECT") {
		return 0, fmt.Errorf("parse connect line %q: expected CONNECT <port>", line)
	}
	p, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse connect line %q: %w", line, err)
	}
	return uint32(p), nil
}

// splice copies bytes both ways until either side ends, then closes both.
type splice struct {
	a, b net.Conn
	once sync.Once
}

func (s *splice) run() {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(s.a, s.b)
	go cp(s.b, s.a)
	<-done
	s.close()
}

func (s *splice) close() {
	s.once.Do(func() {
		s.a.Close()
		s.b.Close()
	})
}
