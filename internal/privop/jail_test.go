package privop

import (
	"encoding/json"
	"strings"
	"testing"
)

// launch returns a valid LaunchFirecracker changed by mod.
func launch(mod func(*LaunchFirecracker)) LaunchFirecracker {
	o := LaunchFirecracker{
		VMID: "vm-1",
		Tap:  "tap-fc-vm1",
		Files: []JailFile{
			{Role: JailConsole},
			{Role: JailKernel, Name: "vmlinux"},
			{Role: JailInitrd, Name: "initrd.img"},
			{Role: JailDrive, Name: "rootfs.ext4"},
			{Role: JailDrive, Name: "seed.img", ReadOnly: true},
		},
	}
	if mod != nil {
		mod(&o)
	}
	return o
}

func drives(n int) []JailFile {
	out := []JailFile{{Role: JailConsole}, {Role: JailKernel, Name: "vmlinux"}}
	for i := range n {
		out = append(out, JailFile{Role: JailDrive, Name: "d" + string(rune('a'+i))})
	}
	return out
}

func TestJailOpsValidateRefuses(t *testing.T) {
	tests := []struct {
		name string
		op   Op
		want string
	}{
		{"empty vm id", launch(func(o *LaunchFirecracker) { o.VMID = "" }), "vm id"},
		{"vm id with slash", launch(func(o *LaunchFirecracker) { o.VMID = "../etc" }), "vm id"},
		{"vm id with dot", launch(func(o *LaunchFirecracker) { o.VMID = "vm.1" }), "vm id"},
		{"vm id with underscore", launch(func(o *LaunchFirecracker) { o.VMID = "vm_1" }), "vm id"},
		{"vm id unicode alnum", launch(func(o *LaunchFirecracker) { o.VMID = "vmé" }), "vm id"},
		{"vm id 65 chars", launch(func(o *LaunchFirecracker) { o.VMID = strings.Repeat("a", 65) }), "vm id"},
		{"vm id newline", launch(func(o *LaunchFirecracker) { o.VMID = "vm\n" }), "vm id"},
		{"tap not banger's name", launch(func(o *LaunchFirecracker) { o.Tap = "eth0" }), "tap"},
		{"dial unknown socket", DialJail{VMID: "a", Socket: "../../run/docker.sock"}, "socket"},
		{"dial bad vm id", DialJail{VMID: "../a", Socket: SocketAPI}, "vm id"},
		{"dial wait too long", DialJail{VMID: "a", Socket: SocketAPI, WaitMS: MaxDialWaitMS + 1}, "wait_ms"},
		{"dial negative wait", DialJail{VMID: "a", Socket: SocketVsock, WaitMS: -1}, "wait_ms"},
		{"signal other than term or kill", SignalVMM{VMID: "a", Signal: "stop"}, "signal"},
		{"signal bad vm id", SignalVMM{VMID: "a b", Signal: SignalKill}, "vm id"},
		{"no files", launch(func(o *LaunchFirecracker) { o.Files = nil }), "exactly one console"},
		{"no console", launch(func(o *LaunchFirecracker) { o.Files = o.Files[1:] }), "exactly one console"},
		{"two consoles", launch(func(o *LaunchFirecracker) { o.Files = append(o.Files, JailFile{Role: JailConsole}) }), "exactly one console"},
		{"two kernels", launch(func(o *LaunchFirecracker) {
			o.Files = append(o.Files, JailFile{Role: JailKernel, Name: "vmlinux2"})
		}), "exactly one console and one kernel"},
		{"two initrds", launch(func(o *LaunchFirecracker) {
			o.Files = append(o.Files, JailFile{Role: JailInitrd, Name: "initrd2"})
		}), "at most one initrd"},
		{"nine drives", launch(func(o *LaunchFirecracker) { o.Files = drives(9) }), "eight drives"},
		{"console with a name", launch(func(o *LaunchFirecracker) { o.Files[0].Name = "console" }), "console takes no name"},
		{"read-only console", launch(func(o *LaunchFirecracker) { o.Files[0].ReadOnly = true }), "console takes no name"},
		{"read-only kernel", launch(func(o *LaunchFirecracker) { o.Files[1].ReadOnly = true }), "read_only is for drives"},
		{"unknown role", launch(func(o *LaunchFirecracker) { o.Files[3].Role = "socket" }), "unknown role"},
		{"name with slash", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "a/b" }), "want [a-z]"},
		{"name dot dot", launch(func(o *LaunchFirecracker) { o.Files[3].Name = ".." }), "want [a-z]"},
		{"absolute name", launch(func(o *LaunchFirecracker) { o.Files[1].Name = "/etc/passwd" }), "want [a-z]"},
		{"empty name", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "" }), "want [a-z]"},
		{"uppercase name", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "Root" }), "want [a-z]"},
		{"name 33 chars", launch(func(o *LaunchFirecracker) { o.Files[3].Name = strings.Repeat("a", 33) }), "want [a-z]"},
		{"reserved dev", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "dev" }), "reserved"},
		{"reserved run", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "run" }), "reserved"},
		{"reserved lib", launch(func(o *LaunchFirecracker) { o.Files[1].Name = "lib" }), "reserved"},
		{"reserved exec name", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "firecracker" }), "reserved"},
		{"reserved pid file", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "firecracker.pid" }), "reserved"},
		{"reserved vsock", launch(func(o *LaunchFirecracker) { o.Files[3].Name = "v.sock" }), "reserved"},
		{"name twice", launch(func(o *LaunchFirecracker) { o.Files[4].Name = "rootfs.ext4" }), "given twice"},
		{"kernel named like a drive", launch(func(o *LaunchFirecracker) { o.Files[1].Name = "seed.img" }), "given twice"},
		{"dial empty vm id", DialJail{Socket: SocketAPI}, "vm id"},
		{"dial vm id traversal", DialJail{VMID: "../../etc", Socket: SocketVsock}, "vm id"},
		{"cleanup empty vm id", CleanupJail{}, "vm id"},
		{"cleanup vm id slash", CleanupJail{VMID: "a/b"}, "vm id"},
		{"cleanup vm id 65 chars", CleanupJail{VMID: strings.Repeat("1", 65)}, "vm id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate(%#v) = %v, want an error mentioning %q", tc.op, err, tc.want)
			}
			if _, err := EncodeRequest(tc.op); err == nil {
				t.Error("EncodeRequest accepted it")
			}
		})
	}
}

func TestJailOpsValidateAccepts(t *testing.T) {
	for _, op := range []Op{
		launch(nil),
		launch(func(o *LaunchFirecracker) { o.VMID = strings.Repeat("A", 64) }),
		launch(func(o *LaunchFirecracker) { o.VMID = "0-Z-9" }),
		launch(func(o *LaunchFirecracker) { o.Files = o.Files[:2] }), // console and kernel only
		launch(func(o *LaunchFirecracker) { o.Files = drives(8) }),
		launch(func(o *LaunchFirecracker) { o.Files[3].Name = "a" + strings.Repeat("_", 31) }),
		launch(func(o *LaunchFirecracker) { o.Tap = "" }),
		DialJail{VMID: "vm-1", Socket: SocketAPI, WaitMS: MaxDialWaitMS}, DialJail{VMID: "vm-1", Socket: SocketVsock},
		SignalVMM{VMID: "vm-1", Signal: SignalTerm}, SignalVMM{VMID: "vm-1", Signal: SignalKill}, CleanupJail{VMID: "x"},
	} {
		if err := op.Validate(); err != nil {
			t.Errorf("Validate(%#v) = %v, want nil", op, err)
		}
	}
}

func TestJailOpsRoundTrip(t *testing.T) {
	for _, op := range []Op{launch(nil), DialJail{VMID: "vm-1", Socket: SocketAPI, WaitMS: 10}, SignalVMM{VMID: "vm-1", Signal: SignalKill}, CleanupJail{VMID: "vm-1"}} {
		body, err := EncodeRequest(op)
		if err != nil {
			t.Fatalf("EncodeRequest(%#v): %v", op, err)
		}
		got, err := DecodeRequest(body)
		if err != nil {
			t.Fatalf("DecodeRequest(%s): %v", body, err)
		}
		if b2, _ := EncodeRequest(got); string(b2) != string(body) {
			t.Errorf("round trip: %s != %s", b2, body)
		}
	}
	// Neither the uid nor the binaries travel in the request: root pins
	// them; and no path does.
	for _, body := range []string{
		`{"op":"launch_firecracker","args":{"vm_id":"a","files":[{"role":"console"},{"role":"kernel","name":"k"}],"uid":0}}`,
		`{"op":"launch_firecracker","args":{"vm_id":"a","jailer_bin":"/usr/bin/sudo","files":[{"role":"console"},{"role":"kernel","name":"k"}]}}`,
		`{"op":"launch_firecracker","args":{"vm_id":"a","firecracker_bin":"/f","files":[{"role":"console"},{"role":"kernel","name":"k"}]}}`,
		`{"op":"launch_firecracker","args":{"vm_id":"a","files":[{"role":"console"},{"role":"kernel","name":"k","fd":3}]}}`,
		`{"op":"cleanup_jail","args":{"vm_id":"a","chroot":"/"}}`,
		`{"op":"dial_jail","args":{"vm_id":"a","socket":"api","path":"/run/docker.sock"}}`,
		`{"op":"signal_vmm","args":{"vm_id":"a","signal":"kill","pid":1}}`,
		`{"op":"chown_api_socket","args":{"vm_id":"a"}}`,
	} {
		if op, err := DecodeRequest([]byte(body)); err == nil || CodeOf(err) != CodeBadRequest {
			t.Errorf("DecodeRequest(%s) = %#v, %v; want bad_request", body, op, err)
		}
	}
}

func TestRequestFiles(t *testing.T) {
	if got := RequestFiles(launch(nil)); got != 5 {
		t.Errorf("RequestFiles(launch) = %d, want 5 (one per file)", got)
	}
	for _, op := range []Op{Ping{}, DialJail{VMID: "a", Socket: SocketAPI}, SignalVMM{VMID: "a", Signal: SignalTerm}, CleanupJail{VMID: "a"}, OpenTap{Tap: "tap-fc-a"}} {
		if got := RequestFiles(op); got != 0 {
			t.Errorf("RequestFiles(%s) = %d, want 0", op.Name(), got)
		}
	}
	// The most files Validate admits fit the wire's cap.
	most := launch(func(o *LaunchFirecracker) {
		o.Files = append(drives(8), JailFile{Role: JailInitrd, Name: "initrd"})
	})
	if err := most.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := RequestFiles(most); n > MaxRequestFiles {
		t.Errorf("a valid launch carries %d fds, more than MaxRequestFiles %d", n, MaxRequestFiles)
	}
	var r LaunchFirecrackerResult
	if err := json.Unmarshal([]byte(`{"pid":42,"pid_start":7,"chroot":"/j/firecracker/a/root"}`), &r); err != nil || r.PID != 42 || r.PIDStart != 7 {
		t.Errorf("result decode = %+v, %v", r, err)
	}
}
