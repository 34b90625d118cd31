package main

import "encoding/json"

// Request bodies of the Firecracker v1.16.1 API (swagger definitions of the
// same name). See strict.go for how the tags are read.

// BootSource is PUT /boot-source.
type BootSource struct {
	KernelImagePath string  `json:"kernel_image_path" fc:"required"`
	BootArgs        *string `json:"boot_args,omitempty"`
	InitrdPath      *string `json:"initrd_path,omitempty"`
}

// TokenBucket is one rate limiter bucket.
type TokenBucket struct {
	Size         uint64  `json:"size" fc:"required"`
	OneTimeBurst *uint64 `json:"one_time_burst,omitempty"`
	RefillTime   uint64  `json:"refill_time" fc:"required"`
}

// RateLimiter limits a device's bandwidth and operations.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// Drive is PUT /drives/{drive_id}.
type Drive struct {
	DriveID      string       `json:"drive_id" fc:"required"`
	IsRootDevice bool         `json:"is_root_device" fc:"required"`
	Partuuid     *string      `json:"partuuid,omitempty"`
	CacheType    *string      `json:"cache_type,omitempty"`
	IsReadOnly   *bool        `json:"is_read_only,omitempty"`
	PathOnHost   *string      `json:"path_on_host,omitempty"`
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
	IoEngine     *string      `json:"io_engine,omitempty"`
	Socket       *string      `json:"socket,omitempty"`
}

// PartialDrive is PATCH /drives/{drive_id}.
type PartialDrive struct {
	DriveID     string       `json:"drive_id" fc:"required"`
	PathOnHost  *string      `json:"path_on_host,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// NetworkInterface is PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id" fc:"required"`
	HostDevName   string       `json:"host_dev_name" fc:"required"`
	GuestMAC      *string      `json:"guest_mac,omitempty"`
	MTU           *uint16      `json:"mtu,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// PartialNetworkInterface is PATCH /network-interfaces/{iface_id}.
type PartialNetworkInterface struct {
	IfaceID       string       `json:"iface_id" fc:"required"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// MachineConfig is PUT /machine-config and the GET answer.
type MachineConfig struct {
	VcpuCount       uint8   `json:"vcpu_count" fc:"required"`
	MemSizeMib      uint64  `json:"mem_size_mib" fc:"required"`
	Smt             *bool   `json:"smt,omitempty"`
	CPUTemplate     *string `json:"cpu_template,omitempty"`
	TrackDirtyPages *bool   `json:"track_dirty_pages,omitempty"`
	HugePages       *string `json:"huge_pages,omitempty"`
}

// MachineConfigUpdate is PATCH /machine-config.
type MachineConfigUpdate struct {
	VcpuCount       *uint8  `json:"vcpu_count,omitempty"`
	MemSizeMib      *uint64 `json:"mem_size_mib,omitempty"`
	Smt             *bool   `json:"smt,omitempty"`
	CPUTemplate     *string `json:"cpu_template,omitempty"`
	TrackDirtyPages *bool   `json:"track_dirty_pages,omitempty"`
	HugePages       *string `json:"huge_pages,omitempty"`
}

// Vsock is PUT /vsock.
type Vsock struct {
	GuestCID uint32  `json:"guest_cid" fc:"required"`
	UDSPath  string  `json:"uds_path" fc:"required"`
	VsockID  *string `json:"vsock_id,omitempty"`
}

// Logger is PUT /logger.
type Logger struct {
	Level         *string `json:"level,omitempty"`
	LogPath       *string `json:"log_path,omitempty"`
	ShowLevel     *bool   `json:"show_level,omitempty"`
	ShowLogOrigin *bool   `json:"show_log_origin,omitempty"`
	Module        *string `json:"module,omitempty"`
}

// Metrics is PUT /metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path" fc:"required"`
}

// MmdsConfig is PUT /mmds/config.
type MmdsConfig struct {
	Version           *string  `json:"version,omitempty"`
	NetworkInterfaces []string `json:"network_interfaces" fc:"required"`
	IPv4Address       *string  `json:"ipv4_address,omitempty"`
	ImdsCompat        *bool    `json:"imds_compat,omitempty"`
}

// Balloon is PUT /balloon.
type Balloon struct {
	AmountMib             uint32  `json:"amount_mib" fc:"required"`
	DeflateOnOOM          bool    `json:"deflate_on_oom" fc:"required"`
	StatsPollingIntervalS *uint16 `json:"stats_polling_interval_s,omitempty"`
	FreePageHinting       *bool   `json:"free_page_hinting,omitempty"`
	FreePageReporting     *bool   `json:"free_page_reporting,omitempty"`
}

// BalloonUpdate is PATCH /balloon.
type BalloonUpdate struct {
	AmountMib uint32 `json:"amount_mib" fc:"required"`
}

// BalloonStatsUpdate is PATCH /balloon/statistics.
type BalloonStatsUpdate struct {
	StatsPollingIntervalS uint16 `json:"stats_polling_interval_s" fc:"required"`
}

// EntropyDevice is PUT /entropy.
type EntropyDevice struct {
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// SerialDevice is PUT /serial.
type SerialDevice struct {
	SerialOutPath *string      `json:"serial_out_path,omitempty"`
	RateLimiter   *TokenBucket `json:"rate_limiter,omitempty"`
}

// CPUConfig is PUT /cpu-config; its contents are not interpreted.
type CPUConfig struct {
	KVMCapabilities *[]string        `json:"kvm_capabilities,omitempty"`
	CpuidModifiers  *json.RawMessage `json:"cpuid_modifiers,omitempty"`
	MsrModifiers    *json.RawMessage `json:"msr_modifiers,omitempty"`
	RegModifiers    *json.RawMessage `json:"reg_modifiers,omitempty"`
	VcpuFeatures    *json.RawMessage `json:"vcpu_features,omitempty"`
}

// InstanceActionInfo is PUT /actions.
type InstanceActionInfo struct {
	ActionType string `json:"action_type" fc:"required"`
}

// VM is PATCH /vm.
type VM struct {
	State string `json:"state" fc:"required"`
}

// SnapshotCreateParams is PUT /snapshot/create.
type SnapshotCreateParams struct {
	MemFilePath  string  `json:"mem_file_path" fc:"required"`
	SnapshotPath string  `json:"snapshot_path" fc:"required"`
	SnapshotType *string `json:"snapshot_type,omitempty"`
}

// SnapshotLoadParams is PUT /snapshot/load.
type SnapshotLoadParams struct {
	SnapshotPath        string           `json:"snapshot_path" fc:"required"`
	MemFilePath         *string          `json:"mem_file_path,omitempty"`
	MemBackend          *json.RawMessage `json:"mem_backend,omitempty"`
	EnableDiffSnapshots *bool            `json:"enable_diff_snapshots,omitempty"`
	TrackDirtyPages     *bool            `json:"track_dirty_pages,omitempty"`
	ResumeVM            *bool            `json:"resume_vm,omitempty"`
	NetworkOverrides    *json.RawMessage `json:"network_overrides,omitempty"`
	VsockOverride       *json.RawMessage `json:"vsock_override,omitempty"`
	ClockRealtime       *bool            `json:"clock_realtime,omitempty"`
}

// InstanceInfo is the GET / answer.
type InstanceInfo struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
	AppName    string `json:"app_name"`
}

// faultBody is every error answer.
type faultBody struct {
	FaultMessage string `json:"fault_message"`
}
