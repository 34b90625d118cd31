package sys

import (
	"fmt"
	"io"
	"net"
	"time"
)

// StartDNSRelay forwards DNS over UDP and TCP from listen (in the guest) to
// upstream, byte for byte: no parsing, so it cannot mangle anything. Close
// the returned closer to stop it.
func StartDNSRelay(listen, upstream string) (io.Closer, error) {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("dns relay on udp %s: %w", listen, err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns relay on tcp %s: %w", listen, err)
	}
	go relayUDP(pc, upstream)
	go relayTCP(ln, upstream)
	return relay{pc, ln}, nil
}

type relay struct {
	pc net.PacketConn
	ln net.Listener
}

func (r relay) Close() error {
	r.ln.Close()
	return r.pc.Close()
}

func relayUDP(pc net.PacketConn, upstream string) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:n]...)
		go func() {
			up, err := net.Dial("udp", upstream)
			if err != nil {
				return
			}
			defer up.Close()
			_ = up.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := up.Write(q); err != nil {
				return
			}
			ans := make([]byte, 65535)
			m, err := up.Read(ans)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(ans[:m], from)
		}()
	}
}

func relayTCP(ln net.Listener, upstream string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			_ = up.SetDeadline(time.Now().Add(30 * time.Second))
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}
