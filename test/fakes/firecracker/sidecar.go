package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"banger/test/fakes/internal/sidecarproto"
)

// requestTimeout bounds one sidecar request; boot is the slowest (QEMU
// start-up and its sockets).
const requestTimeout = 30 * time.Second

// sidecar is the vmmBackend reached over fd 3.
type sidecar struct {
	conn *sidecarproto.Conn
	pid  int

	reqMu   sync.Mutex // one request in flight
	seq     uint64
	replies chan reply

	ports *guestPorts // the guest side of the agent ports

	exitOnce sync.Once
	exited   chan struct{} // closed when the sidecar reported the VM gone
	reason   string        // set before exited is closed
	gone     chan struct{} // closed when the channel ended
}

type reply struct {
	msg   sidecarproto.Message
	files []*os.File
}

// openSidecar takes over fd 3 if it is the fake jailer's sidecar channel,
// and returns nil when there is none (firecracker started directly).
func openSidecar() (*sidecar, error) {
	if !sidecarproto.IsChannel(sidecarproto.FD) {
		return nil, nil
	}
	conn, err := sidecarproto.FromFile(os.NewFile(uintptr(sidecarproto.FD), "sidecar"))
	if err != nil {
		return nil, err
	}
	return connectSidecar(conn)
}

// connectSidecar reads the sidecar's greeting on conn and starts serving it.
func connectSidecar(conn *sidecarproto.Conn) (*sidecar, error) {
	_ = conn.UnixConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	hello, files, err := conn.Recv()
	closeFiles(files)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read sidecar greeting: %w", err)
	}
	if hello.Op != sidecarproto.OpHello || hello.Greeting != sidecarproto.Greeting {
		conn.Close()
		return nil, fmt.Errorf("read sidecar greeting: unexpected %q message", hello.Op)
	}
	_ = conn.UnixConn().SetReadDeadline(time.Time{})
	s := &sidecar{
		conn:    conn,
		pid:     hello.PID,
		replies: make(chan reply, 1),
		exited:  make(chan struct{}),
		gone:    make(chan struct{}),
		ports:   newGuestPorts(),
	}
	go s.read()
	go s.reap()
	return s, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func (s *sidecar) read() {
	defer close(s.gone)
	for {
		m, files, err := s.conn.Recv()
		if err != nil {
			return
		}
		switch m.Op {
		case sidecarproto.OpReply:
			select {
			case s.replies <- reply{msg: m, files: files}:
			default:
				closeFiles(files) // nobody waits for it any more
			}
		case sidecarproto.OpPort:
			closeFiles(files)
			s.ports.set(m.Port, m.Open)
		case sidecarproto.OpExit:
			closeFiles(files)
			s.exitOnce.Do(func() {
				s.reason = m.Reason
				close(s.exited)
			})
		default:
			closeFiles(files)
		}
	}
}

// reap waits for the sidecar process: firecracker is its parent (the jailer
// forked it, then became firecracker), so no zombie is left behind.
func (s *sidecar) reap() {
	if s.pid <= 0 {
		return
	}
	p, err := os.FindProcess(s.pid)
	if err != nil {
		return
	}
	_, _ = p.Wait()
}

// request sends one request and waits for its reply.
func (s *sidecar) request(m sidecarproto.Message, files ...*os.File) (sidecarproto.Message, []*os.File, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.seq++
	m.Seq = s.seq
	if err := s.conn.Send(m, files...); err != nil {
		return m, nil, err
	}
	timeout := time.NewTimer(requestTimeout)
	defer timeout.Stop()
	for {
		select {
		case r := <-s.replies:
			if r.msg.Seq != m.Seq {
				closeFiles(r.files) // a stale reply to a request that timed out
				continue
			}
			if r.msg.Error != "" {
				closeFiles(r.files)
				return r.msg, nil, errors.New(r.msg.Error)
			}
			return r.msg, r.files, nil
		case <-s.gone:
			return m, nil, errors.New("the VMM sidecar went away")
		case <-timeout.C:
			return m, nil, fmt.Errorf("%s: no answer from the VMM sidecar after %s", m.Op, requestTimeout)
		}
	}
}

// Boot implements vmmBackend.
func (s *sidecar) Boot(spec bootSpec) error {
	var files []*os.File
	add := func(f *os.File) int {
		if f == nil {
			return -1
		}
		files = append(files, f)
		return len(files) - 1
	}
	b := &sidecarproto.Boot{
		ID:        spec.ID,
		VCPU:      spec.VCPU,
		MemMiB:    spec.MemMiB,
		Cmdline:   guestCmdline(spec.Cmdline),
		KernelFD:  add(spec.Kernel),
		InitrdFD:  add(spec.Initrd),
		ConsoleFD: add(spec.Console),
		Entropy:   spec.Entropy,
	}
	for _, d := range spec.Drives {
		b.Drives = append(b.Drives, sidecarproto.Drive{FD: add(d.File), ReadOnly: d.ReadOnly})
	}
	if spec.Tap != nil {
		b.Net = &sidecarproto.Net{FD: add(spec.Tap), MAC: spec.MAC}
	}
	_, rf, err := s.request(sidecarproto.Message{Op: sidecarproto.OpBoot, Boot: b}, files...)
	closeFiles(rf)
	return err
}

// Agent implements vmmBackend: it waits (up to acceptTimeout) for an agent
// port the guest has accepted on, then has the sidecar connect to it.
// Closing the connection frees the port for the guest's next accept.
func (s *sidecar) Agent() (net.Conn, error) {
	port, err := s.ports.acquire(acceptTimeout)
	if err != nil {
		return nil, err
	}
	c, err := s.agentPort(port)
	if err != nil {
		s.ports.release(port, false)
		return nil, err
	}
	return &heldPort{Conn: c, release: func(reached bool) { s.ports.release(port, reached) }}, nil
}

func (s *sidecar) agentPort(port int) (net.Conn, error) {
	_, files, err := s.request(sidecarproto.Message{Op: sidecarproto.OpAgent, Port: port})
	if err != nil {
		return nil, err
	}
	if len(files) != 1 {
		closeFiles(files)
		return nil, fmt.Errorf("agent reply carried %d fds, want 1", len(files))
	}
	defer files[0].Close()
	c, err := net.FileConn(files[0])
	if err != nil {
		return nil, fmt.Errorf("wrap agent connection: %w", err)
	}
	return c, nil
}

// heldPort is a host connection to one agent port. It notes whether any
// byte went through to the guest, which is what makes the guest agent
// serve (and afterwards reopen) the port.
type heldPort struct {
	net.Conn
	wrote   atomic.Bool
	once    sync.Once
	release func(reached bool)
}

func (h *heldPort) Write(b []byte) (int, error) {
	n, err := h.Conn.Write(b)
	if n > 0 {
		h.wrote.Store(true)
	}
	return n, err
}

func (h *heldPort) Close() error {
	err := h.Conn.Close()
	h.once.Do(func() { h.release(h.wrote.Load()) })
	return err
}

func (s *sidecar) simple(op string) error {
	_, files, err := s.request(sidecarproto.Message{Op: op})
	closeFiles(files)
	return err
}

// CtrlAltDel implements vmmBackend.
func (s *sidecar) CtrlAltDel() error { return s.simple(sidecarproto.OpCtrlAltDel) }

// Pause implements vmmBackend.
func (s *sidecar) Pause() error { return s.simple(sidecarproto.OpPause) }

// Resume implements vmmBackend.
func (s *sidecar) Resume() error { return s.simple(sidecarproto.OpResume) }
