package sys

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

func TestParseNetConfig(t *testing.T) {
	for _, tc := range []struct {
		in  string
		ok  bool
		out string
	}{
		{"172.16.0.2/24,gw=172.16.0.1,dns=172.16.0.1,mtu=1400", true, "172.16.0.2/24 172.16.0.1 [172.16.0.1] 1400"},
		{"10.0.0.5/8", true, "10.0.0.5/8 invalid IP [] 0"},
		{"172.16.0.2/24,dns=1.1.1.1,dns=9.9.9.9", true, "172.16.0.2/24 invalid IP [1.1.1.1 9.9.9.9] 0"},
		{"172.16.0.2", false, ""},
		{"fd00::2/64", false, ""},
		{"172.16.0.2/24,gw=nope", false, ""},
		{"172.16.0.2/24,mtu=70000", false, ""},
		{"172.16.0.2/24,color=blue", false, ""},
	} {
		c, err := ParseNetConfig(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseNetConfig(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		dns := "["
		for i, d := range c.DNS {
			if i > 0 {
				dns += " "
			}
			dns += d.String()
		}
		dns += "]"
		got := c.Addr.String() + " " + c.Gateway.String() + " " + dns + " " + strconv.Itoa(c.MTU)
		if got != tc.out {
			t.Errorf("ParseNetConfig(%q) = %q, want %q", tc.in, got, tc.out)
		}
	}
}

func TestParseNetConfigDNSPort(t *testing.T) {
	c, err := ParseNetConfig("172.16.0.2/24,gw=172.16.0.1,dns=172.16.0.1,dnsport=42069")
	if err != nil || c.DNSPort != 42069 {
		t.Fatalf("ParseNetConfig = %+v, %v", c, err)
	}
	if _, err := ParseNetConfig("172.16.0.2/24,dnsport=0"); err == nil {
		t.Fatal("dnsport=0 accepted")
	}
}

func TestDNSRelayUDPAndTCP(t *testing.T) {
	// A fake upstream that echoes what it gets, on both protocols, on one
	// port; another test process may hold the TCP side of a port that is
	// free for UDP, so try a few.
	up, tl := listenUDPAndTCP(t)
	defer up.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = up.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	upAddr := up.LocalAddr().String()
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	// Pick a port free for UDP and TCP both; another test process may
	// hold the TCP side of a port that is free for UDP, so try a few.
	var r io.Closer
	var listen string
	for attempt := 0; r == nil; attempt++ {
		probe, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listen = probe.LocalAddr().String()
		probe.Close()
		if r, err = StartDNSRelay(listen, upAddr); err != nil && attempt == 9 {
			t.Fatal(err)
		}
	}
	defer r.Close()
	c, err := net.Dial("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "re:query" {
		t.Fatalf("udp relay answer = %q, %v", b[:n], err)
	}
	tc, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := tc.Write([]byte("tcpq")); err != nil {
		t.Fatal(err)
	}
	n, err = io.ReadFull(tc, b[:4])
	if err != nil || string(b[:n]) != "tcpq" {
		t.Fatalf("tcp relay answer = %q, %v", b[:n], err)
	}
}

// listenUDPAndTCP binds a UDP socket and a TCP listener on one loopback
// port, retrying when the TCP side of a port free for UDP is taken.
func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
		if attempt == 20 {
			t.Fatalf("no loopback port free for both UDP and TCP: %v", err)
		}
	}
}
