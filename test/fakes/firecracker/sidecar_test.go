package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"banger/test/fakes/internal/sidecarproto"
)

// TestSidecarClient drives the firecracker side of the fd-3 protocol
// against a scripted sidecar.
func TestSidecarClient(t *testing.T) {
	a, b, err := sidecarproto.Pair()
	if err != nil {
		t.Fatal(err)
	}
	fcEnd, err := sidecarproto.FromFile(a)
	if err != nil {
		t.Fatal(err)
	}
	side, err := sidecarproto.FromFile(b)
	if err != nil {
		t.Fatal(err)
	}
	defer side.Close()

	guestAgent := make(chan net.Conn, 1)
	scripted := make(chan error, 1)
	go func() {
		scripted <- func() error {
			if err := side.Send(sidecarproto.Message{Op: sidecarproto.OpHello, Greeting: sidecarproto.Greeting}); err != nil {
				return err
			}
			// boot: kernel, drive and console fds arrive with the message.
			m, files, err := side.Recv()
			if err != nil {
				return err
			}
			bt := m.Boot
			if m.Op != sidecarproto.OpBoot || bt == nil || len(files) != 3 || bt.KernelFD != 0 || bt.InitrdFD != -1 ||
				bt.ConsoleFD != 1 || len(bt.Drives) != 1 || bt.Drives[0].FD != 2 || !bt.Drives[0].ReadOnly || bt.Cmdline != "c" {
				return &protoErr{m}
			}
			for _, f := range files {
				f.Close()
			}
			if err := side.Send(sidecarproto.Message{Op: sidecarproto.OpReply, Seq: m.Seq}); err != nil {
				return err
			}
			// The guest opens agent port 1; agent asks for a connection to
			// it, answered with one end of a stream socketpair.
			if err := side.Send(sidecarproto.Message{Op: sidecarproto.OpPort, Port: 1, Open: true}); err != nil {
				return err
			}
			m, _, err = side.Recv()
			if err != nil || m.Op != sidecarproto.OpAgent || m.Port != 1 {
				return &protoErr{m}
			}
			host, guest := streamPair(t)
			guestAgent <- guest
			if err := side.Send(sidecarproto.Message{Op: sidecarproto.OpReply, Seq: m.Seq}, host); err != nil {
				return err
			}
			host.Close()
			// pause fails.
			m, _, err = side.Recv()
			if err != nil || m.Op != sidecarproto.OpPause {
				return &protoErr{m}
			}
			if err := side.Send(sidecarproto.Message{Op: sidecarproto.OpReply, Seq: m.Seq, Error: "no"}); err != nil {
				return err
			}
			return side.Send(sidecarproto.Message{Op: sidecarproto.OpExit, Reason: sidecarproto.ReasonGuestReset})
		}()
	}()

	sc, err := connectSidecar(fcEnd)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.Create(dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	if err := sc.Boot(bootSpec{Cmdline: "c", Kernel: open("k"), Console: open("c"), Drives: []bootDrive{{File: open("d"), ReadOnly: true}}}); err != nil {
		t.Fatal(err)
	}
	c, err := sc.Agent()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := <-guestAgent
	defer g.Close()
	go func() { _, _ = io.WriteString(g, "hi\n") }()
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hi\n" {
		t.Fatalf("agent stream read %q, %v", line, err)
	}
	if err := sc.Pause(); err == nil || err.Error() != "no" {
		t.Fatalf("Pause = %v", err)
	}
	select {
	case <-sc.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("no exit event")
	}
	if sc.reason != sidecarproto.ReasonGuestReset {
		t.Fatalf("reason = %q", sc.reason)
	}
	if err := <-scripted; err != nil {
		t.Fatal(err)
	}
	side.Close()
	select {
	case <-sc.gone:
	case <-time.After(5 * time.Second):
		t.Fatal("channel end not noticed")
	}
	if _, err := sc.Agent(); err == nil {
		t.Fatal("Agent succeeded after the sidecar went away")
	}
}

type protoErr struct{ m sidecarproto.Message }

func (e *protoErr) Error() string { return "unexpected message: " + e.m.Op }

func streamPair(t *testing.T) (*os.File, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.(*net.UnixConn).File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	return f, s
}
