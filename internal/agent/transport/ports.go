package transport

import (
	"errors"
	"io"
	"strconv"
	"sync"

	"banger/internal/agentproto"
)

// PortName is the name of the i-th agent port: agentproto.PortName for the
// first, then agentproto.PortName + ".1", ".2", ...
func PortName(i int) string {
	if i == 0 {
		return agentproto.PortName
	}
	return agentproto.PortName + "." + strconv.Itoa(i)
}

// Ports serves several virtio-serial agent ports at once, each carrying
// one host connection at a time. It is how a VMM emulating a multiplexed
// transport (vsock) over virtio-serial gets concurrent connections: the
// test double of Firecracker asks for it with banger.agentports=.
type Ports struct {
	Ports []*VirtioSerial

	startOnce sync.Once
	conns     chan io.ReadWriteCloser
	done      chan struct{}
	closeOnce sync.Once
}

// NewPorts returns a listener for ports agent ports (at least one).
func NewPorts(ports int) Listener {
	return newPortsAt(ports, "/sys", "/dev")
}

// newPortsAt is NewPorts under other sysfs and /dev roots; with one port it
// is that port's own listener.
func newPortsAt(ports int, sysRoot, devRoot string) Listener {
	if ports <= 1 {
		return &VirtioSerial{Name: PortName(0), SysRoot: sysRoot, DevRoot: devRoot}
	}
	p := &Ports{conns: make(chan io.ReadWriteCloser), done: make(chan struct{})}
	for i := range ports {
		p.Ports = append(p.Ports, &VirtioSerial{Name: PortName(i), SysRoot: sysRoot, DevRoot: devRoot})
	}
	return p
}

// Accept returns the next host connection from any port.
func (p *Ports) Accept() (io.ReadWriteCloser, error) {
	p.startOnce.Do(func() {
		for _, v := range p.Ports {
			go p.serve(v)
		}
	})
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, errors.New("virtio-serial listener closed")
	}
}

// serve accepts on one port; its next Accept waits until the connection
// handed out is closed, so each port carries one connection at a time.
func (p *Ports) serve(v *VirtioSerial) {
	for {
		c, err := v.Accept()
		if err != nil {
			return // closed
		}
		select {
		case p.conns <- c:
		case <-p.done:
			c.Close()
			return
		}
	}
}

// Close stops Accept on every port.
func (p *Ports) Close() error {
	p.closeOnce.Do(func() {
		close(p.done)
		for _, v := range p.Ports {
			v.Close()
		}
	})
	return nil
}
