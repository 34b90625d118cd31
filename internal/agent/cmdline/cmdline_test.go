package cmdline

import "testing"

func TestParse(t *testing.T) {
	p := Parse("console=ttyS0 root=/dev/vdb rootfstype=xfs banger.work=/dev/vdc banger.hostname=t1 banger.init=\"/sbin/my init\" quiet\n")
	want := Params{Root: "/dev/vdb", RootFSType: "xfs", Work: "/dev/vdc", Hostname: "t1", Init: "/sbin/my init", Transport: TransportAuto, Ports: 1}
	if p != want {
		t.Fatalf("Parse = %+v, want %+v", p, want)
	}
}

func TestParseDefaults(t *testing.T) {
	p := Parse("console=ttyS0 banger.transport=vsock")
	if p.Root != "/dev/vda" || p.RootFSType != "ext4" || p.Transport != TransportVsock || p.Work != "" || p.Ports != 1 {
		t.Fatalf("Parse defaults = %+v", p)
	}
}

// TestParseTransport: the driver's banger.transport= comes last and wins
// over one a user put earlier in the kernel arguments; agentports takes
// only a count a virtio-serial device can carry.
func TestParseTransport(t *testing.T) {
	for _, tc := range []struct {
		line      string
		transport string
		ports     int
	}{
		{"", TransportAuto, 1},
		{TransportArg(TransportVsock), TransportVsock, 1},
		{"banger.transport=vsock " + TransportArg(TransportVirtioSerial), TransportVirtioSerial, 1},
		{"banger.transport=virtio-serial banger.agentports=4", TransportVirtioSerial, 4},
		{"banger.agentports=0", TransportAuto, 1},
		{"banger.agentports=32", TransportAuto, 1},
		{"banger.agentports=x", TransportAuto, 1},
		{"banger.agentports=31", TransportAuto, 31},
	} {
		p := Parse(tc.line)
		if p.Transport != tc.transport || p.Ports != tc.ports {
			t.Errorf("Parse(%q) transport %q ports %d, want %q %d", tc.line, p.Transport, p.Ports, tc.transport, tc.ports)
		}
	}
}
