package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"banger/internal/privop"
	"banger/internal/vmm"
)

// The configure-and-boot sequence goes through a small typed client rather
// than firecracker-go-sdk: the SDK dials the API socket by path (bangerd
// reaches the jail's socket through whatever dial it is given), bounds
// every request, InstanceStart included, by one process-wide timeout, and
// sends the deprecated vsock_id.

// guestCID is the guest's vsock context id; each VM has its own vsock
// device, so every guest can use the same one (the lowest a guest may
// have: 0 to 2 are the hypervisor's, loopback's and the host's).
const guestCID = 3

// Request timeouts. Firecracker answers a configuration request from
// memory, at most after opening a file, so requestTimeout only bounds a
// stuck or vanished peer. InstanceStart answers only once Firecracker has
// loaded the kernel (a distro vmlinux is about 50 MB) and initrd into guest
// memory, built every device and started the vCPUs: seconds on a loaded
// host, far past the SDK's 500 ms.
var (
	requestTimeout = 5 * time.Second
	startTimeout   = 30 * time.Second
)

// maxAnswer bounds how much of an answer is read: Firecracker's are a
// fault message or a small JSON object.
const maxAnswer = 64 << 10

// firecrackerBootArgs are the arguments of Firecracker's own default
// command line that still apply when banger passes its own (which replaces
// the default): the i8042 keyboard controller, which Firecracker emulates
// only so that a guest reboot can end the VM, has no mouse port and no
// multiplexer and takes no keyboard commands, so the guest need not probe
// for them at boot. reboot=k is added by kernelArgs. The rest of the
// default is left out on purpose: panic=1 (banger sets panic=-1),
// nomodule (distro kernels load their virtio modules), 8250.nr_uarts=0
// (the console is the serial port), swiotlb=noforce (the kernel's own
// choice is kept).
const firecrackerBootArgs = "i8042.noaux i8042.nomux i8042.dumbkbd"

// bootArgs is the command line Firecracker gets: its defaults first, so
// that an argument bangerd or the user passes later wins, then kernelArgs.
func bootArgs(cmdline string) string {
	return firecrackerBootArgs + " " + kernelArgs(cmdline)
}

// Request bodies, named after Firecracker's API definitions, with only the
// fields banger sets.
type (
	apiLogger struct {
		Level         string `json:"level"`
		LogPath       string `json:"log_path"`
		ShowLevel     bool   `json:"show_level"`
		ShowLogOrigin bool   `json:"show_log_origin"`
	}
	apiMetrics struct {
		MetricsPath string `json:"metrics_path"`
	}
	apiMachineConfig struct {
		VcpuCount  int  `json:"vcpu_count"`
		MemSizeMib int  `json:"mem_size_mib"`
		Smt        bool `json:"smt"`
	}
	apiBootSource struct {
		KernelImagePath string `json:"kernel_image_path"`
		InitrdPath      string `json:"initrd_path,omitempty"`
		BootArgs        string `json:"boot_args"`
	}
	apiDrive struct {
		DriveID      string `json:"drive_id"`
		PathOnHost   string `json:"path_on_host"`
		IsRootDevice bool   `json:"is_root_device"`
		IsReadOnly   bool   `json:"is_read_only"`
	}
	apiNetworkInterface struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
		GuestMAC    string `json:"guest_mac,omitempty"`
	}
	apiVsock struct {
		GuestCID int    `json:"guest_cid"`
		UDSPath  string `json:"uds_path"`
	}
	apiAction struct {
		ActionType string `json:"action_type"`
	}
)

// apiRequest is one call of the sequence.
type apiRequest struct {
	method, path string
	body         any
	timeout      time.Duration
}

func put(path string, body any) apiRequest {
	return apiRequest{method: http.MethodPut, path: path, body: body, timeout: requestTimeout}
}

// requests is the sequence that configures and boots spec's VM, every path
// as Firecracker sees it inside the jail.
func requests(spec vmm.Spec) ([]apiRequest, error) {
	ids, err := driveIDs(spec.Drives)
	if err != nil {
		return nil, err
	}
	boot := apiBootSource{KernelImagePath: "/" + jailKernel, BootArgs: bootArgs(spec.Cmdline)}
	if spec.Initrd != "" {
		boot.InitrdPath = "/" + jailInitrd
	}
	reqs := []apiRequest{
		put("/logger", apiLogger{Level: "Info", LogPath: jailLog, ShowLevel: true}),
		put("/metrics", apiMetrics{MetricsPath: jailMetrics}),
		put("/machine-config", apiMachineConfig{VcpuCount: spec.VCPU, MemSizeMib: spec.MemoryMiB}),
		put("/boot-source", boot),
	}
	for i, dr := range spec.Drives {
		// The jail file keeps banger's name; only the API id is mapped.
		reqs = append(reqs, put("/drives/"+ids[i], apiDrive{
			DriveID: ids[i], PathOnHost: "/" + dr.ID, IsRootDevice: i == 0, IsReadOnly: dr.ReadOnly,
		}))
	}
	if spec.Net != nil {
		reqs = append(reqs, put("/network-interfaces/1", apiNetworkInterface{IfaceID: "1", HostDevName: spec.Net.TapName, GuestMAC: spec.Net.MAC}))
	}
	reqs = append(reqs, put("/vsock", apiVsock{GuestCID: guestCID, UDSPath: privop.JailVsock}))
	start := put("/actions", apiAction{ActionType: "InstanceStart"})
	start.timeout = startTimeout
	return append(reqs, start), nil
}

// driveIDs gives each drive an id Firecracker accepts (ASCII letters,
// digits and underscores): banger's ids may hold '-' and '.', which become
// '_'. Two drives that would end up with the same id are refused.
func driveIDs(drives []vmm.Drive) ([]string, error) {
	ids := make([]string, len(drives))
	owner := map[string]string{}
	for i, dr := range drives {
		if dr.ID == "" {
			return nil, fmt.Errorf("drive %d has no id", i)
		}
		id := apiID(dr.ID)
		if prev, dup := owner[id]; dup {
			return nil, fmt.Errorf("drives %q and %q would both be %q to firecracker", prev, dr.ID, id)
		}
		owner[id] = dr.ID
		ids[i] = id
	}
	return ids, nil
}

func apiID(id string) string {
	b := []byte(id)
	for i, c := range b {
		if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Dialer opens a connection to a firecracker's API socket.
type Dialer func(ctx context.Context) (net.Conn, error)

// DialPath dials the API socket at path (or a symlink to it).
func DialPath(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// Configure configures an already running firecracker through its API,
// reached with dial, and boots the guest with InstanceStart.
func Configure(ctx context.Context, spec vmm.Spec, dial Dialer) error {
	reqs, err := requests(spec)
	if err != nil {
		return fmt.Errorf("configure firecracker: %w", err)
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
	}}
	defer hc.CloseIdleConnections()
	for _, r := range reqs {
		if err := send(ctx, hc, r); err != nil {
			return fmt.Errorf("configure firecracker: %w", err)
		}
	}
	return nil
}

// send makes one request and turns an error answer into an error carrying
// Firecracker's fault message.
func send(parent context.Context, hc *http.Client, r apiRequest) error {
	ctx, cancel := context.WithTimeout(parent, r.timeout)
	defer cancel()
	b, err := json.Marshal(r.body)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", r.method, r.path, err)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, "http://localhost"+r.path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if parent.Err() == nil && ctx.Err() != nil {
			return fmt.Errorf("%s %s: no answer within %s: %w", r.method, r.path, r.timeout, err)
		}
		return fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: firecracker answered %s: %s", r.method, r.path, resp.Status, faultMessage(answer))
	}
	return nil
}

// faultMessage is the fault_message of an error answer, or the answer.
func faultMessage(answer []byte) string {
	var f struct {
		FaultMessage string `json:"fault_message"`
	}
	if json.Unmarshal(answer, &f) == nil && f.FaultMessage != "" {
		return f.FaultMessage
	}
	return strings.TrimSpace(string(answer))
}
