// Package api defines the JSON wire types of bangerd's HTTP API on its unix
// socket. It imports only the standard library so the CLI, the client and
// the daemon share it without pulling in each other.
//
// Long operations answer with application/x-ndjson: zero or more Event lines
// carrying Progress, then one line carrying Result or Error.
package api

import (
	"encoding/json"
	"time"
)

// Version of the API; the client refuses a daemon that speaks another.
const Version = 1

// VM states.
const (
	StateCreating = "creating" // disks being made; rolled back if bangerd dies meanwhile
	StateCreated  = "created"
	StateStarting = "starting"
	StateRunning  = "running"
	StateStopping = "stopping"
	StateStopped  = "stopped"
	StateError    = "error"
)

// VM is a VM as the API shows it.
type VM struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Image     string    `json:"image"`
	ImageID   string    `json:"image_id"`
	Kernel    string    `json:"kernel"`
	KernelID  string    `json:"kernel_id"`
	VCPU      int       `json:"vcpu"`
	MemoryMiB int       `json:"memory_mib"`
	DiskSize  int64     `json:"disk_size"`
	VMM       string    `json:"vmm,omitempty"`
	PID       int       `json:"pid,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	GuestIP   string    `json:"guest_ip,omitempty"`
	NAT       bool      `json:"nat,omitempty"`
	DNSName   string    `json:"dns_name,omitempty"`
	Workspace string    `json:"workspace,omitempty"` // guest directory of the copied work tree
	// WorkspaceHost and WorkspaceBase are the host work tree and the
	// commit the workspace was copied at.
	WorkspaceHost string `json:"workspace_host,omitempty"`
	WorkspaceBase string `json:"workspace_base,omitempty"`
	Dir           string `json:"dir"`
	ConsoleLog    string `json:"console_log"`
	// RootDisk says how the root disk is kept: RootDiskFile (the VM's own
	// copy or clone of its image), RootDiskSnapshot (a device-mapper
	// snapshot of the image, made by the root helper while the VM runs) or
	// RootDiskOverlay (a qcow2 file over the image, QEMU only).
	RootDisk string `json:"root_disk"`
}

// VM.RootDisk values.
const (
	RootDiskFile     = "file"
	RootDiskSnapshot = "dm snapshot"
	RootDiskOverlay  = "qcow2 overlay"
)

// CreateVMRequest creates (and by default starts) a VM.
type CreateVMRequest struct {
	Name      string `json:"name,omitempty"`
	Image     string `json:"image,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	VCPU      int    `json:"vcpu,omitempty"`
	MemoryMiB int    `json:"memory_mib,omitempty"`
	DiskSize  string `json:"disk_size,omitempty"`
	NoStart   bool   `json:"no_start,omitempty"`
	NAT       bool   `json:"nat,omitempty"` // masquerade the guest's egress`
	// Set when the caller passed the value explicitly, so that 0 is an error
	// rather than "use the default".
	VCPUSet   bool `json:"vcpu_set,omitempty"`
	MemorySet bool `json:"memory_set,omitempty"`
}

// SetVMRequest changes a stopped VM's resources.
type SetVMRequest struct {
	VCPU      *int    `json:"vcpu,omitempty"`
	MemoryMiB *int    `json:"memory_mib,omitempty"`
	DiskSize  *string `json:"disk_size,omitempty"`
}

// WorkspaceRequest records the work tree copied into a VM.
type WorkspaceRequest struct {
	HostPath string `json:"host_path"`
	GuestDir string `json:"guest_dir"`
	Head     string `json:"head,omitempty"`
}

// NamesRequest names several VMs for a lifecycle command.
type NamesRequest struct {
	Names []string `json:"names"`
}

// NameResult is one VM's outcome in a multi-VM command.
type NameResult struct {
	Name  string `json:"name"`
	VM    *VM    `json:"vm,omitempty"`
	Error *Error `json:"error,omitempty"`
}

// PruneResult lists what vm prune removed.
type PruneResult struct {
	Deleted []string `json:"deleted"`
}

// ExecRequest runs a command in a VM. The connection upgrades to the
// agentproto exec frame stream on success.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
}

// Port is a listening socket in a guest.
type Port struct {
	Proto    string `json:"proto"`
	Addr     string `json:"addr"`
	Port     uint16 `json:"port"`
	PID      int    `json:"pid,omitempty"`
	Process  string `json:"process,omitempty"`
	Endpoint string `json:"endpoint"` // <name>.vm:PORT
}

// ConnectRequest opens a TCP connection inside a guest; the HTTP connection
// upgrades to a raw byte stream to it.
type ConnectRequest struct {
	Addr string `json:"addr"` // host:port in the guest, default host 127.0.0.1
}

// ExecUpgrade is the Upgrade header value of an exec request.
const ExecUpgrade = "banger-exec"

// ConnectUpgrade is the Upgrade header value of a connect request.
const ConnectUpgrade = "banger-connect"

// Image is a stored root filesystem.
type Image struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"` // sha256 of the ext4
	Size      int64     `json:"size"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
	Path      string    `json:"path"`
	UsedBy    []string  `json:"used_by,omitempty"`
	Ref       string    `json:"ref,omitempty"`    // registry reference it was pulled from
	Digest    string    `json:"digest,omitempty"` // its manifest digest
	Kernel    string    `json:"kernel,omitempty"` // kernel VMs of this image boot when they name none
	Parent    string    `json:"parent,omitempty"` // for a committed VM: the image it was created from
}

// PushRequest publishes a kernel or an image to a registry reference.
type PushRequest struct {
	Ref string `json:"ref"`
}

// PushResult is where a push landed.
type PushResult struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
}

// PullKernelRequest pulls a kernel artifact.
type PullKernelRequest struct {
	Ref  string `json:"ref"`
	Name string `json:"name,omitempty"`
}

// CommitRequest publishes a VM's root disk as an image.
type CommitRequest struct {
	As string `json:"as"`
}

// PullImageRequest pulls an OCI image from a registry.
type PullImageRequest struct {
	Ref      string `json:"ref"`
	Name     string `json:"name,omitempty"`
	Platform string `json:"platform,omitempty"` // default linux/amd64
	Kernel   string `json:"kernel,omitempty"`
}

// Transfer is a blob's download progress, streamed during a pull.
type Transfer struct {
	Digest string `json:"digest"`
	Index  int    `json:"index"` // 1-based layer position
	Count  int    `json:"count"`
	Done   int64  `json:"done"`
	Total  int64  `json:"total"`
	Cached bool   `json:"cached,omitempty"`
}

// CachePruneResult lists what an image cache prune removed (or would
// remove).
type CachePruneResult struct {
	Removed []string `json:"removed"`
	Bytes   int64    `json:"bytes"`
	DryRun  bool     `json:"dry_run,omitempty"`
}

// ImportImageRequest imports a rootfs tarball or directory on the host.
type ImportImageRequest struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// BuildImageRequest builds an image (debootstrap or the built-in minimal).
type BuildImageRequest struct {
	Name        string `json:"name"`
	Debootstrap string `json:"debootstrap,omitempty"` // suite
	Mirror      string `json:"mirror,omitempty"`
	Minimal     bool   `json:"minimal,omitempty"`
}

// Kernel is a stored kernel artifact.
type Kernel struct {
	Name        string    `json:"name"`
	ID          string    `json:"id"`
	Version     string    `json:"version"`
	Source      string    `json:"source"`
	SourceName  string    `json:"source_name"`
	CreatedAt   time.Time `json:"created_at"`
	Dir         string    `json:"dir"`
	BootModules []string  `json:"boot_modules,omitempty"`
	HasInitrd   bool      `json:"has_initrd"`
}

// ImportKernelRequest imports a vmlinux (and optional initrd) from the host.
type ImportKernelRequest struct {
	Name    string `json:"name"`
	Vmlinux string `json:"vmlinux,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Deb     string `json:"deb,omitempty"`
	Default bool   `json:"default,omitempty"`
}

// Error is the body of every failed request.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorBody wraps Error on non-streaming failures.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Event is one line of a streamed (ndjson) response.
type Event struct {
	Progress string          `json:"progress,omitempty"`
	Transfer *Transfer       `json:"transfer,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    *Error          `json:"error,omitempty"`
}

// Ping is the answer of GET /v1/ping.
type Ping struct {
	APIVersion int    `json:"api_version"`
	Version    string `json:"version"`
	PID        int    `json:"pid"`
	// StartedAt is when this bangerd started serving.
	StartedAt time.Time `json:"started_at,omitzero"`
	// Managed names what keeps this bangerd running: "" when the CLI
	// started it on demand (the CLI may stop and restart it), else
	// ManagedSystemd or ManagedSystemRun.
	Managed string `json:"managed,omitempty"`
}

// SupervisorEnv, in bangerd's environment, names what keeps it running:
// SupervisorSystemd (bangerd.service sets it) or SupervisorSystemRun (banger
// system run sets it). The CLI never passes it to a bangerd it starts.
const (
	SupervisorEnv       = "BANGER_SUPERVISOR"
	SupervisorSystemd   = "systemd"
	SupervisorSystemRun = "system-run"
)

// Ping.Managed values.
const (
	ManagedSystemd   = "systemd"    // bangerd.service (banger system install)
	ManagedSystemRun = "system run" // supervised by banger system run
)

// Doctor is the report of GET /v1/doctor.
type Doctor struct {
	Checks    []Check   `json:"checks"`
	VMM       string    `json:"vmm"`
	VMMReason string    `json:"vmm_reason"`
	Accel     string    `json:"accel"`
	Defaults  []Default `json:"defaults"`
}

// Check is one doctor line.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok | warn | fail
	Detail string `json:"detail"`
}

// Default is one resolved VM default with its provenance.
type Default struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source string `json:"source"`
	Why    string `json:"why"`
}
