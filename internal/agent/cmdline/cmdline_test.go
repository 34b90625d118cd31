package cmdline

import "testing"

func TestParse(t *testing.T) {
	p := Parse("console=ttyS0 root=/dev/vdb rootfstype=xfs banger.work=/dev/vdc banger.hostname=t1 banger.init=\"/sbin/my init\" quiet\n")
	want := Params{Root: "/dev/vdb", RootFSType: "xfs", Work: "/dev/vdc", Hostname: "t1", Init: "/sbin/my init", Transport: TransportAuto}
	if p != want {
		t.Fatalf("Parse = %+v, want %+v", p, want)
	}
}

func TestParseDefaults(t *testing.T) {
	p := Parse("console=ttyS0 banger.transport=vsock")
	if p.Root != "/dev/vda" || p.RootFSType != "ext4" || p.Transport != TransportVsock || p.Work != "" {
		t.Fatalf("Parse defaults = %+v", p)
	}
}
