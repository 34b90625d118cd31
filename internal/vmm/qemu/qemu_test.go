package qemu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/vmm"
)

func testSpec() vmm.Spec {
	return vmm.Spec{
		ID: "abc123", Name: "dev", VCPU: 2, MemoryMiB: 1024,
		Kernel: "/k/vmlinux", Initrd: "/k/initrd.img", Cmdline: "console=ttyS0 root=/dev/vda",
		Drives: []vmm.Drive{
			{ID: "root", Path: "/s/root,1.ext4", ReadOnly: false},
			{ID: "work", Path: "/s/work.ext4", ReadOnly: true},
		},
	}
}

// flagValues returns the values following each occurrence of flag in argv.
func flagValues(argv []string, flag string) []string {
	var out []string
	for i := 0; i < len(argv)-1; i++ {
		if argv[i] == flag {
			out = append(out, argv[i+1])
		}
	}
	return out
}

func one(t *testing.T, argv []string, flag string) string {
	t.Helper()
	v := flagValues(argv, flag)
	if len(v) != 1 {
		t.Fatalf("%s appears %d times in %q, want once", flag, len(v), argv)
	}
	return v[0]
}

func TestArgs(t *testing.T) {
	const T = " banger.transport=virtio-serial"
	tests := []struct {
		name       string
		accel      string
		tscKHz     int
		wantCPU    bool
		wantAppend string
		userArgs   string
	}{
		{"kvm", "kvm", 0, true, "console=ttyS0 root=/dev/vda" + T, ""},
		{"kvm ignores tsc", "kvm", 2500000, true, "console=ttyS0 root=/dev/vda" + T, ""},
		{"tcg without tsc", "tcg", 0, false, "console=ttyS0 root=/dev/vda" + T, ""},
		{"tcg with tsc", "tcg", 2500000, false, "console=ttyS0 root=/dev/vda tsc_early_khz=2500000 tsc=reliable" + T, ""},
		// A transport in the user's kernel arguments comes first, so the
		// driver's own (the last one) is what the agent reads.
		{"user transport loses", "kvm", 0, true, "console=ttyS0 root=/dev/vda banger.transport=vsock" + T, " banger.transport=vsock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec()
			spec.Cmdline += tc.userArgs
			argv := Args(spec, tc.accel, tc.tscKHz, "/run/a,gent.sock", "/run/console.sock")
			if got := one(t, argv, "-accel"); got != tc.accel {
				t.Errorf("-accel %q, want %q", got, tc.accel)
			}
			cpu := flagValues(argv, "-cpu")
			if tc.wantCPU && !slices.Equal(cpu, []string{"host"}) {
				t.Errorf("-cpu = %q, want [host]", cpu)
			}
			if !tc.wantCPU && len(cpu) != 0 {
				t.Errorf("-cpu = %q under %s, want none", cpu, tc.accel)
			}
			if got := one(t, argv, "-append"); got != tc.wantAppend {
				t.Errorf("-append %q, want %q", got, tc.wantAppend)
			}
			if got := one(t, argv, "-m"); got != "1024" {
				t.Errorf("-m %q", got)
			}
			if got := one(t, argv, "-smp"); got != "2" {
				t.Errorf("-smp %q", got)
			}
			if got := one(t, argv, "-kernel"); got != "/k/vmlinux" {
				t.Errorf("-kernel %q", got)
			}
			if got := one(t, argv, "-initrd"); got != "/k/initrd.img" {
				t.Errorf("-initrd %q", got)
			}
			if got := one(t, argv, "-name"); !strings.Contains(got, "banger-abc123") {
				t.Errorf("-name %q does not carry the VM id", got)
			}

			drives := flagValues(argv, "-drive")
			if len(drives) != 2 {
				t.Fatalf("-drive = %q, want 2", drives)
			}
			if !strings.HasPrefix(drives[0], "id=root,file=/s/root,,1.ext4,") || strings.Contains(drives[0], "readonly") {
				t.Errorf("first drive %q: want root, comma doubled, writable", drives[0])
			}
			if !strings.HasPrefix(drives[1], "id=work,file=/s/work.ext4,") || !strings.HasSuffix(drives[1], ",readonly=on") {
				t.Errorf("second drive %q: want work, read-only", drives[1])
			}
			var blk []string
			for _, d := range flagValues(argv, "-device") {
				if strings.HasPrefix(d, "virtio-blk-device,") {
					blk = append(blk, d)
				}
			}
			if !slices.Equal(blk, []string{"virtio-blk-device,drive=root", "virtio-blk-device,drive=work"}) {
				t.Errorf("block devices %q, want root then work", blk)
			}

			chardevs := flagValues(argv, "-chardev")
			if len(chardevs) != 2 {
				t.Fatalf("-chardev = %q, want 2", chardevs)
			}
			for _, c := range chardevs {
				if !strings.HasPrefix(c, "socket,") || !strings.Contains(c, ",server=on") {
					t.Errorf("chardev %q: want a listening socket", c)
				}
			}
			agent, console := chardevs[0], chardevs[1]
			if !strings.Contains(agent, "id=agent,path=/run/a,,gent.sock,") || !strings.HasSuffix(agent, ",wait=off") {
				t.Errorf("agent chardev %q: want escaped path and wait=off", agent)
			}
			if !strings.Contains(console, "id=console,path=/run/console.sock,") || !strings.HasSuffix(console, ",wait=on") {
				t.Errorf("console chardev %q: want wait=on", console)
			}
			if got := one(t, argv, "-serial"); got != "chardev:console" {
				t.Errorf("-serial %q", got)
			}
			for _, f := range []string{"-nodefaults", "-no-user-config", "-no-reboot"} {
				if !slices.Contains(argv, f) {
					t.Errorf("argv lacks %s", f)
				}
			}
		})
	}
}

func TestArgsWithoutInitrd(t *testing.T) {
	s := testSpec()
	s.Initrd = ""
	argv := Args(s, "kvm", 0, "/a", "/c")
	if slices.Contains(argv, "-initrd") {
		t.Fatalf("argv has -initrd without an initrd: %q", argv)
	}
}

func TestParseCPUInfoKHz(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"typical", "processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 2494.140\ncache size\t: 1 KB\n", 2494140},
		{"first wins", "cpu MHz : 1000.000\ncpu MHz : 3000.000\n", 1000000},
		{"rounds", "cpu MHz\t: 2399.9996\n", 2400000},
		{"missing", "processor : 0\nbogomips : 4000\n", 0},
		{"empty", "", 0},
		{"garbage", "cpu MHz : fast\n", 0},
		{"zero", "cpu MHz : 0\n", 0},
		{"negative", "cpu MHz : -5\n", 0},
		{"other key with prefix", "cpu MHz max : 5000\ncpu MHz : 2000\n", 2000000},
	}
	for _, tc := range tests {
		if got := parseCPUInfoKHz(tc.in); got != tc.want {
			t.Errorf("%s: parseCPUInfoKHz = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestIsOurs(t *testing.T) {
	h := vmm.Handle{AgentSock: "/run/banger/vm/abc/agent,x.sock"}
	ours := Args(testSpec(), "kvm", 0, h.AgentSock, "/run/banger/vm/abc/console.sock")
	tests := []struct {
		name string
		argv []string
		want bool
	}{
		{"our qemu", append([]string{"/usr/bin/qemu-system-x86_64"}, ours...), true},
		{"empty", nil, false},
		{"not qemu", append([]string{"/usr/bin/sleep"}, ours...), false},
		{"qemu for another vm", append([]string{"qemu-system-x86_64"},
			Args(testSpec(), "kvm", 0, "/run/banger/vm/other/agent.sock", "/c")...), false},
		{"unescaped path does not match", []string{"qemu-system-x86_64", "-chardev", "socket,id=agent,path=/run/banger/vm/abc/agent,x.sock,server=on"}, false},
		{"path prefix of another", []string{"qemu-system-x86_64", "-chardev", "socket,id=agent,path=/run/banger/vm/abc/agent,,x.sock.old,server=on"}, false},
	}
	for _, tc := range tests {
		if got := isOurs(tc.argv, h); got != tc.want {
			t.Errorf("%s: isOurs = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEscapeOpt(t *testing.T) {
	for in, want := range map[string]string{"": "", "a": "a", "a,b": "a,,b", ",,": ",,,,"} {
		if got := escapeOpt(in); got != want {
			t.Errorf("escapeOpt(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProbeCacheSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "probe.json")
	// A pinned accelerator probes without running anything.
	d1 := &Driver{Bin: "/bin/true", ForceAccel: "tcg", ProbeCache: cache}
	p1 := d1.Probe(context.Background())
	if !p1.Available || p1.Accel != "tcg" {
		t.Fatalf("probe = %+v", p1)
	}
	b, err := os.ReadFile(cache)
	if err != nil || !strings.Contains(string(b), "tcg") {
		t.Fatalf("cache file = %q, %v", b, err)
	}
	// A new driver (a restarted bangerd) answers from the file: make the
	// cached verdict distinguishable to prove it was not recomputed.
	if err := os.WriteFile(cache, []byte(strings.Replace(string(b), "accelerator pinned", "from cache", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	d2 := &Driver{Bin: "/bin/true", ForceAccel: "tcg", ProbeCache: cache}
	if p2 := d2.Probe(context.Background()); !strings.Contains(p2.Reason, "from cache") {
		t.Fatalf("second driver re-probed: %+v", p2)
	}
}

func TestArgsNetwork(t *testing.T) {
	spec := testSpec()
	without := Args(spec, "tcg", 0, "/r/a.sock", "/r/c.sock")
	if !slices.Contains(without, "-nic") || slices.Contains(without, "-netdev") {
		t.Fatalf("no-network argv = %q", without)
	}
	spec.Net = &vmm.Net{MAC: "02:fc:ac:10:00:02"}
	with := Args(spec, "tcg", 0, "/r/a.sock", "/r/c.sock")
	if slices.Contains(with, "-nic") {
		t.Fatalf("network argv still has -nic none: %q", with)
	}
	i := slices.Index(with, "-netdev")
	if i < 0 || with[i+1] != "tap,id=net0,fd=3,vhost=off" {
		t.Fatalf("netdev = %q", with)
	}
	if !slices.Contains(with, "virtio-net-device,netdev=net0,mac=02:fc:ac:10:00:02") {
		t.Fatalf("net device missing: %q", with)
	}
}

// TestArgsOpenDrives: drives given open travel as fds after the tap, each
// in its own fd set; a block device uses host_device.
func TestArgsOpenDrives(t *testing.T) {
	var tap, dev, work *os.File
	for _, f := range []**os.File{&tap, &dev, &work} {
		var err error
		if *f, err = os.Open(os.DevNull); err != nil {
			t.Fatal(err)
		}
		defer (*f).Close()
	}
	for _, tc := range []struct {
		name      string
		net       bool
		addFD     []string
		drives    []string
		extraFDs  []*os.File
		tapOption string
	}{
		{"with a tap", true,
			[]string{"fd=4,set=1,opaque=root", "fd=5,set=2,opaque=work"},
			[]string{
				"id=root,file.driver=host_device,file.filename=/dev/fdset/1,file.auto-read-only=off,format=raw,if=none,cache=unsafe,discard=unmap",
				"id=work,file.driver=file,file.filename=/dev/fdset/2,file.auto-read-only=off,format=raw,if=none,cache=unsafe,discard=unmap,readonly=on",
			},
			[]*os.File{tap, dev, work}, "tap,id=net0,fd=3,vhost=off"},
		{"without network", false,
			[]string{"fd=3,set=1,opaque=root", "fd=4,set=2,opaque=work"}, nil,
			[]*os.File{dev, work}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec()
			s.Drives[0].File, s.Drives[0].Block = dev, true
			s.Drives[1].File = work
			if tc.net {
				s.Net = &vmm.Net{Tap: tap, MAC: "02:00:00:00:00:01"}
			}
			argv := Args(s, "tcg", 0, "/a", "/c")
			if got := flagValues(argv, "-add-fd"); !slices.Equal(got, tc.addFD) {
				t.Errorf("-add-fd = %q, want %q", got, tc.addFD)
			}
			if tc.drives != nil {
				if got := flagValues(argv, "-drive"); !slices.Equal(got, tc.drives) {
					t.Errorf("-drive = %q\nwant %q", got, tc.drives)
				}
			}
			if got := ExtraFiles(s); !slices.Equal(got, tc.extraFDs) {
				t.Errorf("extra files = %v, want %v", got, tc.extraFDs)
			}
			if tc.tapOption != "" {
				if got := one(t, argv, "-netdev"); got != tc.tapOption {
					t.Errorf("-netdev %q", got)
				}
			}
		})
	}
}

func TestArgsOverlayDrive(t *testing.T) {
	s := testSpec()
	s.Drives[0].Format = vmm.FormatQCOW2
	drives := flagValues(Args(s, "tcg", 0, "/a", "/c"), "-drive")
	if len(drives) != 2 || !strings.Contains(drives[0], ",format=qcow2,") || !strings.Contains(drives[1], ",format=raw,") {
		t.Errorf("-drive = %q: want the root as qcow2, the work disk raw", drives)
	}
}
