package api

import "time"

// VMStats is one sample of what a VM costs, the answer of
// GET /v1/vms/{name}/stats. Sizes are bytes. Host and Guest are set only
// while the VM runs; a running VM whose guest could not answer has
// GuestError instead of Guest. CPU time is a counter: a rate needs two
// samples.
type VMStats struct {
	Name      string      `json:"name"`
	State     string      `json:"state"`
	VCPU      int         `json:"vcpu"`
	MemoryMiB int         `json:"memory_mib"` // configured
	SampledAt time.Time   `json:"sampled_at"`
	Host      *HostStats  `json:"host,omitempty"`
	Disks     []DiskStats `json:"disks"`
	Guest     *GuestStats `json:"guest,omitempty"`
	// GuestError says why a running VM has no Guest (e.g. an agent that
	// predates the stats op).
	GuestError string `json:"guest_error,omitempty"`
}

// HostStats is the VMM process as the host sees it.
type HostStats struct {
	PID int `json:"pid"`
	// UptimeSeconds is how long the VMM process has run, on the host's
	// boot clock, which never jumps: two samples of one process differ by
	// exactly the time between them.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// CPUSeconds is the process's user+system CPU time so far, all vCPU
	// threads included.
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   int64   `json:"rss_bytes"` // resident memory of the VMM process
}

// DiskStats is one of a VM's disk files: its apparent size and the bytes
// the host filesystem really allocated for it (sparse files, reflinks and
// snapshots allocate far less).
type DiskStats struct {
	Name           string `json:"name"` // "root" or "work"
	File           string `json:"file"` // root.ext4, root.cow (dm snapshot storage) or work.ext4
	SizeBytes      int64  `json:"size_bytes"`
	AllocatedBytes int64  `json:"allocated_bytes"`
}

// GuestStats is the guest's own view, from its agent.
type GuestStats struct {
	MemTotalBytes     int64   `json:"mem_total_bytes"`
	MemAvailableBytes int64   `json:"mem_available_bytes"`
	Load1             float64 `json:"load1"`
	Load5             float64 `json:"load5"`
	Load15            float64 `json:"load15"`
	UptimeSeconds     float64 `json:"uptime_seconds"`
	Processes         int     `json:"processes"`
	// Filesystems are those at / (the root disk) and /root (the work disk).
	Filesystems []FSStats `json:"filesystems"`
}

// FSStats is a guest filesystem's usage as df shows it.
type FSStats struct {
	Path       string `json:"path"`
	SizeBytes  int64  `json:"size_bytes"`
	UsedBytes  int64  `json:"used_bytes"`
	AvailBytes int64  `json:"avail_bytes"`
	Error      string `json:"error,omitempty"`
}
