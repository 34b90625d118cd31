package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBackend records boots and serves agent connections from a pipe.
type fakeBackend struct {
	mu     sync.Mutex
	boots  []bootSpec
	agents chan net.Conn // guest ends of the connections handed out
	cad    int
}

func newFakeBackend() *fakeBackend { return &fakeBackend{agents: make(chan net.Conn, 8)} }

func (b *fakeBackend) Boot(spec bootSpec) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.boots = append(b.boots, spec)
	return nil
}

func (b *fakeBackend) Agent() (net.Conn, error) {
	host, guest := net.Pipe()
	b.agents <- guest
	return host, nil
}

func (b *fakeBackend) CtrlAltDel() error { b.cad++; return nil }
func (b *fakeBackend) Pause() error      { return nil }
func (b *fakeBackend) Resume() error     { return nil }

// elfHeader is the start of a 64-bit little-endian x86_64 ELF file.
func elfHeader() []byte {
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1
	h[18] = 62
	return h
}

// testEnv is a machine whose "jail" is a temp dir.
type testEnv struct {
	t       *testing.T
	dir     string
	m       *machine
	backend *fakeBackend
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{t: t, dir: dir, m: newMachine("test-vm"), backend: newFakeBackend()}
	e.m.log.configure(io.Discard, levelOff, false, false)
	e.m.devKVM = e.file("kvm", nil)
	e.m.devTun = e.file("tun", nil)
	e.m.backend = e.backend
	e.file("vmlinux", elfHeader())
	e.file("bzImage", []byte("MZ\x00\x00not an elf"))
	e.file("rootfs.ext4", make([]byte, 4096))
	e.file("work.ext4", make([]byte, 4096))
	e.file("initrd.img", []byte("070701"))
	e.file("fc.log", nil)
	e.file("fc.metrics", nil)
	return e
}

func (e *testEnv) file(name string, data []byte) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *testEnv) path(name string) string { return filepath.Join(e.dir, name) }

// do sends one request through the real HTTP handler.
func (e *testEnv) do(method, path, body string) (int, string) {
	e.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	e.m.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func (e *testEnv) must(method, path, body string) {
	e.t.Helper()
	if code, out := e.do(method, path, body); code != http.StatusNoContent {
		e.t.Fatalf("%s %s %s = %d %s", method, path, body, code, out)
	}
}

// configure sets up a bootable VM.
func (e *testEnv) configure() {
	e.t.Helper()
	e.must("PUT", "/boot-source", `{"kernel_image_path":"`+e.path("vmlinux")+`","boot_args":"console=ttyS0 reboot=k panic=1"}`)
	e.must("PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"`+e.path("rootfs.ext4")+`","is_root_device":true,"is_read_only":false}`)
	e.must("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":512}`)
}

func (e *testEnv) start() {
	e.t.Helper()
	e.must("PUT", "/actions", `{"action_type":"InstanceStart"}`)
}

func faultOf(t *testing.T, body string) string {
	t.Helper()
	var f faultBody
	if err := json.Unmarshal([]byte(body), &f); err != nil || f.FaultMessage == "" {
		t.Fatalf("body %q is not a fault: %v", body, err)
	}
	return f.FaultMessage
}

func TestValidation(t *testing.T) {
	type step struct{ method, path, body string }
	cases := []struct {
		name     string
		setup    func(e *testEnv)
		req      func(e *testEnv) step
		wantCode int
		wantMsg  string // substring of fault_message
	}{
		{
			name: "unknown field",
			req: func(e *testEnv) step {
				return step{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"vcpus":2}`}
			},
			wantCode: 400, wantMsg: "unknown field `vcpus`",
		},
		{
			name:     "field names are case-sensitive",
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"Vcpu_Count":1,"mem_size_mib":128}`} },
			wantCode: 400, wantMsg: "unknown field `Vcpu_Count`",
		},
		{
			name: "duplicate field",
			req: func(e *testEnv) step {
				return step{"PUT", "/machine-config", `{"vcpu_count":1,"vcpu_count":2,"mem_size_mib":128}`}
			},
			wantCode: 400, wantMsg: "duplicate field",
		},
		{
			name:     "trailing data",
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128} {}`} },
			wantCode: 400, wantMsg: "trailing",
		},
		{
			name: "nested unknown field",
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/d", `{"drive_id":"d","is_root_device":false,"path_on_host":"/x","rate_limiter":{"bandwidth":{"size":1,"refill_time":1,"burst":2}}}`}
			},
			wantCode: 400, wantMsg: "unknown field `burst`",
		},
		{
			name:     "missing required field",
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"vcpu_count":1}`} },
			wantCode: 400, wantMsg: "missing field `mem_size_mib`",
		},
		{
			name: "null for a required field",
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/d", `{"drive_id":"d","is_root_device":null,"path_on_host":"/x"}`}
			},
			wantCode: 400, wantMsg: "invalid type: null",
		},
		{
			name:     "empty body",
			req:      func(e *testEnv) step { return step{"PUT", "/boot-source", ``} },
			wantCode: 400, wantMsg: "empty",
		},
		{
			name:     "wrong type",
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":128}`} },
			wantCode: 400, wantMsg: "vcpu_count",
		},
		{
			name:     "vcpu_count above 32",
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`} },
			wantCode: 400, wantMsg: "vCPU number is invalid",
		},
		{
			name:     "vcpu_count overflows u8",
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"vcpu_count":256,"mem_size_mib":128}`} },
			wantCode: 400, wantMsg: "u8",
		},
		{
			name: "odd vcpu_count with smt",
			req: func(e *testEnv) step {
				return step{"PUT", "/machine-config", `{"vcpu_count":3,"mem_size_mib":128,"smt":true}`}
			},
			wantCode: 400, wantMsg: "vCPU number is invalid",
		},
		{
			name:     "zero memory",
			req:      func(e *testEnv) step { return step{"PATCH", "/machine-config", `{"mem_size_mib":0}`} },
			wantCode: 400, wantMsg: "memory size",
		},
		{
			name: "huge_pages Transparent is not in v1.16.1",
			req: func(e *testEnv) step {
				return step{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"huge_pages":"Transparent"}`}
			},
			wantCode: 400, wantMsg: "unknown variant",
		},
		{
			name: "guest_cid below 3",
			req: func(e *testEnv) step {
				return step{"PUT", "/vsock", `{"guest_cid":2,"uds_path":"` + e.path("v.sock") + `"}`}
			},
			wantCode: 400, wantMsg: "guest_cid",
		},
		{
			name: "uds_path already exists",
			req: func(e *testEnv) step {
				return step{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"` + e.path("fc.log") + `"}`}
			},
			wantCode: 400, wantMsg: "(os error 98)",
		},
		{
			name: "host_dev_name too long",
			req: func(e *testEnv) step {
				return step{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"sixteen-bytes-xx"}`}
			},
			wantCode: 400, wantMsg: "sixteen-bytes-xx",
		},
		{
			name: "tap attach failure names the device and errno",
			req: func(e *testEnv) step {
				return step{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0"}`}
			},
			wantCode: 400, wantMsg: "(os error 25)", // ENOTTY: the test's /dev/net/tun is a plain file
		},
		{
			name: "bad guest_mac",
			req: func(e *testEnv) step {
				return step{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:zz:00:00:01"}`}
			},
			wantCode: 400, wantMsg: "MAC",
		},
		{
			name: "mtu below 68",
			req: func(e *testEnv) step {
				return step{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","mtu":67}`}
			},
			wantCode: 400, wantMsg: "MTU",
		},
		{
			name: "path id differs from body id",
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/a", `{"drive_id":"b","is_root_device":false,"path_on_host":"` + e.path("work.ext4") + `"}`}
			},
			wantCode: 400, wantMsg: "does not match",
		},
		{
			name: "path id with a dash",
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/root-fs", `{"drive_id":"root-fs","is_root_device":true,"path_on_host":"/x"}`}
			},
			wantCode: 400, wantMsg: "Invalid ID",
		},
		{
			name: "second root device",
			setup: func(e *testEnv) {
				e.must("PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":true,"path_on_host":"`+e.path("rootfs.ext4")+`"}`)
			},
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/other", `{"drive_id":"other","is_root_device":true,"path_on_host":"` + e.path("work.ext4") + `"}`}
			},
			wantCode: 400, wantMsg: "root block device already exists",
		},
		{
			name: "missing drive file names path and errno",
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_root_device":true,"path_on_host":"/nonexistent.ext4"}`}
			},
			wantCode: 400, wantMsg: `(os error 2), "/nonexistent.ext4"`,
		},
		{
			name:     "missing kernel",
			req:      func(e *testEnv) step { return step{"PUT", "/boot-source", `{"kernel_image_path":"/nonexistent"}`} },
			wantCode: 400, wantMsg: "/nonexistent: No such file or directory (os error 2)",
		},
		{
			name: "cache_type enum",
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/d", `{"drive_id":"d","is_root_device":false,"path_on_host":"/x","cache_type":"None"}`}
			},
			wantCode: 400, wantMsg: "unknown variant",
		},
		{
			name:     "logger path must exist",
			req:      func(e *testEnv) step { return step{"PUT", "/logger", `{"log_path":"` + e.path("nope.log") + `"}`} },
			wantCode: 400, wantMsg: "(os error 2)",
		},
		{
			name:     "logger only once",
			setup:    func(e *testEnv) { e.must("PUT", "/logger", `{"log_path":"`+e.path("fc.log")+`","level":"debug"}`) },
			req:      func(e *testEnv) step { return step{"PUT", "/logger", `{"log_path":"` + e.path("fc.log") + `"}`} },
			wantCode: 400, wantMsg: "already initialized",
		},
		{
			name:  "metrics only once",
			setup: func(e *testEnv) { e.must("PUT", "/metrics", `{"metrics_path":"`+e.path("fc.metrics")+`"}`) },
			req: func(e *testEnv) step {
				return step{"PUT", "/metrics", `{"metrics_path":"` + e.path("fc.metrics") + `"}`}
			},
			wantCode: 400, wantMsg: "Reinitialization",
		},
		{
			name:     "unknown route",
			req:      func(e *testEnv) step { return step{"GET", "/nope", ``} },
			wantCode: 400, wantMsg: "Invalid request method and/or path",
		},
		{
			name:     "wrong method",
			req:      func(e *testEnv) step { return step{"PATCH", "/boot-source", `{}`} },
			wantCode: 400, wantMsg: "Invalid request method and/or path",
		},
		{
			name:     "post-boot action before boot",
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`} },
			wantCode: 400, wantMsg: "not supported before starting",
		},
		{
			name:     "unknown action",
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"Reboot"}`} },
			wantCode: 400, wantMsg: "unknown variant",
		},
		{
			name:     "PATCH drive before boot",
			req:      func(e *testEnv) step { return step{"PATCH", "/drives/rootfs", `{"drive_id":"rootfs"}`} },
			wantCode: 400, wantMsg: "not supported before starting",
		},
		{
			name:     "PATCH vm before boot",
			req:      func(e *testEnv) step { return step{"PATCH", "/vm", `{"state":"Paused"}`} },
			wantCode: 400, wantMsg: "not supported before starting",
		},
		{
			name:     "pre-boot request after boot",
			setup:    func(e *testEnv) { e.configure(); e.start() },
			req:      func(e *testEnv) step { return step{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`} },
			wantCode: 400, wantMsg: "not supported after starting",
		},
		{
			name:  "drive PUT after boot",
			setup: func(e *testEnv) { e.configure(); e.start() },
			req: func(e *testEnv) step {
				return step{"PUT", "/drives/work", `{"drive_id":"work","is_root_device":false,"path_on_host":"` + e.path("work.ext4") + `"}`}
			},
			wantCode: 400, wantMsg: "not supported after starting",
		},
		{
			name:     "InstanceStart twice",
			setup:    func(e *testEnv) { e.configure(); e.start() },
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"InstanceStart"}`} },
			wantCode: 400, wantMsg: "not supported after starting",
		},
		{
			name:     "InstanceStart without boot source",
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"InstanceStart"}`} },
			wantCode: 400, wantMsg: "without kernel configuration",
		},
		{
			name: "InstanceStart with a non-ELF kernel",
			setup: func(e *testEnv) {
				e.configure()
				e.must("PUT", "/boot-source", `{"kernel_image_path":"`+e.path("bzImage")+`"}`)
			},
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"InstanceStart"}`} },
			wantCode: 400, wantMsg: "invalid ELF magic",
		},
		{
			name: "InstanceStart without root drive or initrd",
			setup: func(e *testEnv) {
				e.must("PUT", "/boot-source", `{"kernel_image_path":"`+e.path("vmlinux")+`"}`)
			},
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"InstanceStart"}`} },
			wantCode: 400, wantMsg: "neither a root block device nor an initrd",
		},
		{
			name: "InstanceStart without access to /dev/kvm",
			setup: func(e *testEnv) {
				e.configure()
				e.m.devKVM = e.path("no-kvm")
			},
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"InstanceStart"}`} },
			wantCode: 400, wantMsg: "no-kvm: No such file or directory (os error 2)",
		},
		{
			name: "InstanceStart without a sidecar",
			setup: func(e *testEnv) {
				e.configure()
				e.m.backend = nil
			},
			req:      func(e *testEnv) step { return step{"PUT", "/actions", `{"action_type":"InstanceStart"}`} },
			wantCode: 400, wantMsg: "no VMM sidecar",
		},
		{
			name: "snapshot load is not emulated",
			req: func(e *testEnv) step {
				return step{"PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_file_path":"/m"}`}
			},
			wantCode: 400, wantMsg: "not emulated",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			s := tc.req(e)
			code, body := e.do(s.method, s.path, s.body)
			if code != tc.wantCode {
				t.Fatalf("%s %s = %d %s, want %d", s.method, s.path, code, body, tc.wantCode)
			}
			if msg := faultOf(t, body); !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("fault_message %q does not contain %q", msg, tc.wantMsg)
			}
		})
	}
}

func TestInstanceInfoAndMachineConfig(t *testing.T) {
	e := newTestEnv(t)
	code, body := e.do("GET", "/", "")
	if code != 200 {
		t.Fatalf("GET / = %d %s", code, body)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"id": "test-vm", "state": "Not started", "vmm_version": "1.16.1", "app_name": "Firecracker"}
	if len(info) != len(want) {
		t.Fatalf("GET / = %v, want exactly %v", info, want)
	}
	for k, v := range want {
		if info[k] != v {
			t.Fatalf("GET / %s = %v, want %v", k, info[k], v)
		}
	}

	code, body = e.do("GET", "/machine-config", "")
	if code != 200 || !strings.Contains(body, `"vcpu_count":1`) || !strings.Contains(body, `"mem_size_mib":128`) {
		t.Fatalf("GET /machine-config = %d %s", code, body)
	}
	code, body = e.do("GET", "/version", "")
	if code != 200 || body != `{"firecracker_version":"1.16.1"}` {
		t.Fatalf("GET /version = %d %s", code, body)
	}

	e.configure()
	e.must("PATCH", "/machine-config", `{"vcpu_count":4}`)
	e.start()
	_, body = e.do("GET", "/", "")
	if !strings.Contains(body, `"state":"Running"`) {
		t.Fatalf("GET / after start = %s", body)
	}
	e.must("PATCH", "/vm", `{"state":"Paused"}`)
	if _, body = e.do("GET", "/", ""); !strings.Contains(body, `"state":"Paused"`) {
		t.Fatalf("GET / after pause = %s", body)
	}
	e.must("PATCH", "/vm", `{"state":"Resumed"}`)
	if _, body = e.do("GET", "/machine-config", ""); !strings.Contains(body, `"vcpu_count":4`) || !strings.Contains(body, `"mem_size_mib":512`) {
		t.Fatalf("GET /machine-config after PATCH = %s", body)
	}
	if code, body = e.do("GET", "/vm/config", ""); code != 200 || !strings.Contains(body, `"drive_id":"rootfs"`) {
		t.Fatalf("GET /vm/config = %d %s", code, body)
	}
}

func TestInstanceStartBootSpec(t *testing.T) {
	e := newTestEnv(t)
	e.must("PUT", "/boot-source", `{"kernel_image_path":"`+e.path("vmlinux")+`","initrd_path":"`+e.path("initrd.img")+`","boot_args":"console=ttyS0"}`)
	// The work drive is added first: the root drive must still come first.
	e.must("PUT", "/drives/work", `{"drive_id":"work","path_on_host":"`+e.path("work.ext4")+`","is_root_device":false,"is_read_only":false}`)
	e.must("PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"`+e.path("rootfs.ext4")+`","is_root_device":true,"is_read_only":true}`)
	e.must("PUT", "/entropy", `{}`)
	e.start()
	if len(e.backend.boots) != 1 {
		t.Fatalf("%d boots", len(e.backend.boots))
	}
	b := e.backend.boots[0]
	if b.Cmdline != "console=ttyS0 pci=off root=/dev/vda ro" {
		t.Fatalf("cmdline = %q", b.Cmdline)
	}
	if b.VCPU != 1 || b.MemMiB != 128 || b.Initrd == nil || !b.Entropy || b.Tap != nil {
		t.Fatalf("boot spec = %+v", b)
	}
	if len(b.Drives) != 2 || !b.Drives[0].ReadOnly || b.Drives[1].ReadOnly ||
		b.Drives[0].File.Name() != e.path("rootfs.ext4") || b.Drives[1].File.Name() != e.path("work.ext4") {
		t.Fatalf("drives = %+v", b.Drives)
	}
}

func TestDefaultBootArgs(t *testing.T) {
	e := newTestEnv(t)
	e.must("PUT", "/boot-source", `{"kernel_image_path":"`+e.path("vmlinux")+`"}`)
	e.must("PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"`+e.path("rootfs.ext4")+`","is_root_device":true,"partuuid":"0eaa91a0-01"}`)
	e.start()
	want := defaultBootArgs + " pci=off root=PARTUUID=0eaa91a0-01 rw"
	if got := e.backend.boots[0].Cmdline; got != want {
		t.Fatalf("cmdline = %q, want %q", got, want)
	}
}

func TestNullOptionalFieldIsAbsent(t *testing.T) {
	e := newTestEnv(t)
	// The go SDK sends "log_path": null when unset; serde takes it as None.
	e.must("PUT", "/logger", `{"log_path":null,"level":"Info","show_level":false}`)
}

// vsockEnv is a booted machine with a vsock listener.
func vsockEnv(t *testing.T) (*testEnv, string) {
	e := newTestEnv(t)
	uds := e.path("v.sock")
	e.configure()
	e.must("PUT", "/vsock", `{"guest_cid":3,"uds_path":"`+uds+`"}`)
	t.Cleanup(func() { e.m.vsock.ln.Close() })
	return e, uds
}

func dialConnect(t *testing.T, uds, line string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func TestVsockConnect(t *testing.T) {
	e, uds := vsockEnv(t)

	// Before InstanceStart nothing listens in the guest.
	_, r := dialConnect(t, uds, "CONNECT 52\n")
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("CONNECT before boot was answered")
	}

	e.start()
	c1, r1 := dialConnect(t, uds, "CONNECT 52\n")
	line, err := r1.ReadString('\n')
	if err != nil || line != "OK 1073741824\n" {
		t.Fatalf("CONNECT reply = %q, %v", line, err)
	}
	guest1 := <-e.backend.agents
	// Bytes flow both ways, the first ones right after the CONNECT line.
	go func() { _, _ = guest1.Write([]byte("from guest\n")) }()
	if got, err := r1.ReadString('\n'); err != nil || got != "from guest\n" {
		t.Fatalf("host read %q, %v", got, err)
	}
	go func() { _, _ = io.WriteString(c1, "from host\n") }()
	if got, err := bufio.NewReader(guest1).ReadString('\n'); err != nil || got != "from host\n" {
		t.Fatalf("guest read %q, %v", got, err)
	}

	// A second connection is a stream of its own; the first stays open.
	_, r2 := dialConnect(t, uds, "connect 52\n")
	if line, err := r2.ReadString('\n'); err != nil || line != "OK 1073741825\n" {
		t.Fatalf("second CONNECT reply = %q, %v", line, err)
	}
	guest2 := <-e.backend.agents
	defer guest2.Close()
	go func() { _, _ = guest1.Write([]byte("still here\n")) }()
	if got, err := r1.ReadString('\n'); err != nil || got != "still here\n" {
		t.Fatalf("first connection after a second CONNECT read %q, %v", got, err)
	}

	// Other ports and malformed lines are closed without an answer.
	for _, l := range []string{"CONNECT 53\n", "CONNECT\n", "HELLO 52\n", "CONNECT 52 53\n", "CONNECT -1\n", strings.Repeat("x", 40) + "\n"} {
		_, r := dialConnect(t, uds, l)
		if got, err := r.ReadString('\n'); err == nil {
			t.Fatalf("%q answered %q", l, got)
		}
	}
}

func TestVsockAfterGuestHalt(t *testing.T) {
	e, uds := vsockEnv(t)
	e.start()
	e.m.setHalted()
	_, r := dialConnect(t, uds, "CONNECT 52\n")
	if got, err := r.ReadString('\n'); err == nil {
		t.Fatalf("CONNECT after halt answered %q", got)
	}
	// The API still answers, with the state Firecracker reports.
	if _, body := e.do("GET", "/", ""); !strings.Contains(body, `"state":"Running"`) {
		t.Fatalf("GET / after halt = %s", body)
	}
}

func TestReadConnect(t *testing.T) {
	r := strings.NewReader("CONNECT 52\nrest")
	p, err := readConnect(r)
	if err != nil || p != 52 {
		t.Fatalf("readConnect = %d, %v", p, err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "rest" {
		t.Fatalf("readConnect consumed past the line: left %q", rest)
	}
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--version"}, exitOK},
		{[]string{"--bogus"}, exitArgParsing},
		{[]string{"--id", "bad/id", "--version"}, exitOK}, // --version wins, like clap
		{[]string{"--id", "bad/id"}, exitArgParsing},
		{[]string{"--no-seccomp", "--seccomp-filter", "/f"}, exitArgParsing},
		{[]string{"--seccomp-filter", "/nonexistent.bpf"}, exitGeneric},
		{[]string{"--start-time-us", "x"}, exitArgParsing},
		{[]string{"--level", "loud"}, exitArgParsing},
	} {
		if got := runQuiet(t, tc.args); got != tc.code {
			t.Errorf("run(%q) = %d, want %d", tc.args, got, tc.code)
		}
	}
}

// runQuiet runs the CLI with stdout and stderr discarded.
func runQuiet(t *testing.T, args []string) int {
	t.Helper()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = devnull, devnull
	defer func() { os.Stdout, os.Stderr = oldOut, oldErr }()
	return run(args)
}

func TestAPISocketMustNotExist(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := runQuiet(t, []string{"--api-sock", sock, "--no-seccomp"}); got != exitGeneric {
		t.Fatalf("run with an existing socket path = %d, want %d", got, exitGeneric)
	}
}
