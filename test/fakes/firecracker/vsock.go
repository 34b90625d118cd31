package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/agentproto"
)

// Hybrid vsock emulation. Firecracker listens on uds_path; a host client
// sends "CONNECT <port>\n" and gets "OK <host port>\n" once the guest
// accepted, or a closed connection when nothing accepts on that port
// within Firecracker's connection request timeout. Connections are
// independent streams: any number may be open at once.
//
// The emulated guest has no vsock device (QEMU under the sidecar has no
// vhost-vsock to give it): its agent serves agentPorts virtio-serial ports
// instead, told so on its command line (guestCmdline), and only the agent
// port (agentproto.VsockPort) is reachable. A port the guest agent has open
// is an accept waiting for a host; the backend's Agent hands out such a
// port, once per guest open, and fails when none opens in time. So "OK"
// follows the guest's accept as with Firecracker, and up to agentPorts
// host connections run side by side; more wait for a port to come free,
// within the same timeout.

const (
	connectTimeout = 10 * time.Second
	maxConnectLine = 32
	// acceptTimeout is how long a host connection waits for the guest to
	// accept it: Firecracker's connection request timeout (2 s).
	acceptTimeout = 2 * time.Second
	// agentPorts is how many agent ports the emulated guest serves.
	agentPorts = 4
)

type vsockDev struct {
	cfg Vsock
	ln  *net.UnixListener
}

// agentChannel numbers host connections to the guest agent.
type agentChannel struct {
	mu       sync.Mutex
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
	agent, err := m.backend.Agent()
	if err != nil {
		if !errors.Is(err, errNoListener) {
			m.log.errorf("vsock: connect to the guest agent: %v", err)
		}
		c.Close()
		return
	}
	a := &m.agent
	a.mu.Lock()
	hostPort := a.nextPort
	a.nextPort++
	a.mu.Unlock()
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		c.Close()
		agent.Close()
		return
	}
	go (&splice{a: c, b: agent}).run()
}

// guestCmdline is the command line the emulated guest boots with: the
// agent is told to serve agentPorts virtio-serial ports where the command
// line names vsock, the one transport this guest cannot have.
func guestCmdline(cmdline string) string {
	if !vsockArg.MatchString(cmdline) {
		return cmdline
	}
	// Adjacent matches share a blank, so one pass may leave every other.
	for vsockArg.MatchString(cmdline) {
		cmdline = vsockArg.ReplaceAllString(cmdline, "${1}banger.transport=virtio-serial${2}")
	}
	return cmdline + " banger.agentports=" + strconv.Itoa(agentPorts)
}

// vsockArg is a banger.transport=vsock parameter, with the blanks around it.
var vsockArg = regexp.MustCompile(`(^|\s)banger\.transport=vsock(\s|$)`)

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
