package fcspec

import (
	"net/http"
	"regexp"
)

// Version is the Firecracker release these facts describe.
const Version = "1.16.1"

// IDPattern is what a drive, network interface or pmem id in a URL path may
// be. Firecracker (api_server's checked_id) takes a non-empty id of
// alphanumerics and underscores; banger keeps to the ASCII letters and
// digits of that set, the only ones its ids can contain once made valid.
var IDPattern = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// Endpoints are the paths and methods of the API, with their body types.
var Endpoints = []Endpoint{
	{Method: http.MethodGet, Path: "/"},
	{Method: http.MethodGet, Path: "/version"},
	{Method: http.MethodPut, Path: "/actions", Body: "InstanceActionInfo"},
	{Method: http.MethodGet, Path: "/balloon"},
	{Method: http.MethodPut, Path: "/balloon", Body: "Balloon"},
	{Method: http.MethodPatch, Path: "/balloon", Body: "BalloonUpdate"},
	{Method: http.MethodGet, Path: "/balloon/statistics"},
	{Method: http.MethodPatch, Path: "/balloon/statistics", Body: "BalloonStatsUpdate"},
	{Method: http.MethodPatch, Path: "/balloon/hinting/start", Body: "BalloonStartCmd", BodyOptional: true},
	{Method: http.MethodGet, Path: "/balloon/hinting/status"},
	{Method: http.MethodPatch, Path: "/balloon/hinting/stop"},
	{Method: http.MethodPut, Path: "/boot-source", Body: "BootSource"},
	{Method: http.MethodPut, Path: "/cpu-config", Body: "CpuConfig"},
	{Method: http.MethodPut, Path: "/drives/{drive_id}", Body: "Drive"},
	{Method: http.MethodPatch, Path: "/drives/{drive_id}", Body: "PartialDrive"},
	{Method: http.MethodPut, Path: "/pmem/{id}", Body: "Pmem"},
	{Method: http.MethodPatch, Path: "/pmem/{id}", Body: "PartialPmem"},
	{Method: http.MethodPut, Path: "/logger", Body: "Logger"},
	{Method: http.MethodGet, Path: "/machine-config"},
	{Method: http.MethodPut, Path: "/machine-config", Body: "MachineConfiguration"},
	{Method: http.MethodPatch, Path: "/machine-config", Body: "MachineConfigurationUpdate"},
	{Method: http.MethodPut, Path: "/metrics", Body: "Metrics"},
	{Method: http.MethodGet, Path: "/mmds"},
	{Method: http.MethodPut, Path: "/mmds", Body: "MmdsContentsObject"},
	{Method: http.MethodPatch, Path: "/mmds", Body: "MmdsContentsObject"},
	{Method: http.MethodPut, Path: "/mmds/config", Body: "MmdsConfig"},
	{Method: http.MethodPut, Path: "/entropy", Body: "EntropyDevice"},
	{Method: http.MethodPut, Path: "/serial", Body: "SerialDevice"},
	{Method: http.MethodGet, Path: "/hotplug/memory"},
	{Method: http.MethodPut, Path: "/hotplug/memory", Body: "MemoryHotplugConfig"},
	{Method: http.MethodPatch, Path: "/hotplug/memory", Body: "MemoryHotplugSizeUpdate"},
	{Method: http.MethodPut, Path: "/network-interfaces/{iface_id}", Body: "NetworkInterface"},
	{Method: http.MethodPatch, Path: "/network-interfaces/{iface_id}", Body: "PartialNetworkInterface"},
	{Method: http.MethodPut, Path: "/snapshot/create", Body: "SnapshotCreateParams"},
	{Method: http.MethodPut, Path: "/snapshot/load", Body: "SnapshotLoadParams"},
	{Method: http.MethodPatch, Path: "/vm", Body: "Vm"},
	{Method: http.MethodGet, Path: "/vm/config"},
	{Method: http.MethodPut, Path: "/vsock", Body: "Vsock"},
}

// Field constructors keep the tables below one line a field.

type opt func(*Field)

var (
	required   opt = func(f *Field) { f.Required = true }
	deprecated opt = func(f *Field) { f.Deprecated = true }
	signed     opt = func(f *Field) { f.Signed = true }
)

func oneOf(vals ...string) opt { return func(f *Field) { f.Enum = vals } }
func atLeast(n int64) opt      { return func(f *Field) { f.Min, f.HasMin = n, true } }
func atMost(n int64) opt       { return func(f *Field) { f.Max, f.HasMax = n, true } }
func matching(re *regexp.Regexp) opt {
	return func(f *Field) { f.Pattern = re }
}

func field(name string, k Kind, opts []opt) Field {
	f := Field{Name: name, Kind: k}
	for _, o := range opts {
		o(&f)
	}
	return f
}

func str(name string, opts ...opt) Field     { return field(name, String, opts) }
func integer(name string, opts ...opt) Field { return field(name, Integer, opts) }
func boolean(name string, opts ...opt) Field { return field(name, Boolean, opts) }
func object(name, ref string, opts ...opt) Field {
	f := field(name, Object, opts)
	f.Ref = ref
	return f
}
func array(name string, item Field, opts ...opt) Field {
	f := field(name, Array, opts)
	f.Items = &item
	return f
}

func types(ts ...Type) map[string]Type {
	m := make(map[string]Type, len(ts))
	for _, t := range ts {
		m[t.Name] = t
	}
	return m
}

// Types are the request body types by swagger definition name, plus
// MachineConfigurationUpdate: the swagger reuses MachineConfiguration for
// PATCH /machine-config, but Firecracker reads that body into a type whose
// every field is optional.
var Types = types(
	Type{Name: "InstanceActionInfo", Fields: []Field{
		str("action_type", required, oneOf("FlushMetrics", "InstanceStart", "SendCtrlAltDel")),
	}},
	Type{Name: "Balloon", Fields: []Field{
		integer("amount_mib", required),
		boolean("deflate_on_oom", required),
		integer("stats_polling_interval_s"),
		boolean("free_page_hinting"),
		boolean("free_page_reporting"),
	}},
	Type{Name: "BalloonUpdate", Fields: []Field{
		integer("amount_mib", required),
	}},
	Type{Name: "BalloonStatsUpdate", Fields: []Field{
		integer("stats_polling_interval_s", required),
	}},
	Type{Name: "BalloonStartCmd", Fields: []Field{
		boolean("acknowledge_on_stop"),
	}},
	Type{Name: "BootSource", Fields: []Field{
		str("kernel_image_path", required),
		str("boot_args"),
		str("initrd_path"),
	}},
	Type{Name: "CpuConfig", Fields: []Field{
		array("kvm_capabilities", str("")),
		array("cpuid_modifiers", object("", "CpuidLeafModifier")),
		array("msr_modifiers", object("", "MsrModifier")),
		array("reg_modifiers", object("", "ArmRegisterModifier")),
		array("vcpu_features", object("", "VcpuFeatures")),
	}},
	Type{Name: "CpuidLeafModifier", Fields: []Field{
		str("leaf", required),
		str("subleaf", required),
		integer("flags", required, signed),
		array("modifiers", object("", "CpuidRegisterModifier"), required),
	}},
	Type{Name: "CpuidRegisterModifier", Fields: []Field{
		str("register", required, oneOf("eax", "ebx", "ecx", "edx")),
		str("bitmap", required),
	}},
	Type{Name: "MsrModifier", Fields: []Field{
		str("addr", required),
		str("bitmap", required),
	}},
	Type{Name: "ArmRegisterModifier", Fields: []Field{
		str("addr", required),
		str("bitmap", required),
	}},
	Type{Name: "VcpuFeatures", Fields: []Field{
		integer("index", required, signed),
		str("bitmap", required),
	}},
	Type{Name: "Drive", Fields: []Field{
		str("drive_id", required, matching(IDPattern)),
		boolean("is_root_device", required),
		str("partuuid"),
		str("cache_type", oneOf("Unsafe", "Writeback")),
		boolean("is_read_only"),
		str("path_on_host"),
		object("rate_limiter", "RateLimiter"),
		str("io_engine", oneOf("Sync", "Async")),
		str("socket"),
	}},
	Type{Name: "PartialDrive", Fields: []Field{
		str("drive_id", required, matching(IDPattern)),
		str("path_on_host"),
		object("rate_limiter", "RateLimiter"),
	}},
	Type{Name: "Pmem", Fields: []Field{
		str("id", required, matching(IDPattern)),
		str("path_on_host", required),
		boolean("root_device"),
		boolean("read_only"),
		object("rate_limiter", "RateLimiter"),
	}},
	Type{Name: "PartialPmem", Fields: []Field{
		str("id", required, matching(IDPattern)),
		object("rate_limiter", "RateLimiter"),
	}},
	Type{Name: "Logger", Fields: []Field{
		str("level", oneOf("Error", "Warning", "Info", "Debug", "Trace", "Off")),
		str("log_path"),
		boolean("show_level"),
		boolean("show_log_origin"),
		str("module"),
	}},
	// vcpu_count: [1, 32] (MAX_SUPPORTED_VCPUS); mem_size_mib: Firecracker
	// refuses 0 (machine_config.rs), the swagger states no bound.
	Type{Name: "MachineConfiguration", Fields: []Field{
		integer("vcpu_count", required, atLeast(1), atMost(32)),
		integer("mem_size_mib", required, atLeast(1)),
		boolean("smt"),
		str("cpu_template", deprecated, oneOf("C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None")),
		boolean("track_dirty_pages"),
		str("huge_pages", oneOf("None", "2M")),
	}},
	Type{Name: "MachineConfigurationUpdate", Fields: []Field{
		integer("vcpu_count", atLeast(1), atMost(32)),
		integer("mem_size_mib", atLeast(1)),
		boolean("smt"),
		str("cpu_template", deprecated, oneOf("C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None")),
		boolean("track_dirty_pages"),
		str("huge_pages", oneOf("None", "2M")),
	}},
	Type{Name: "Metrics", Fields: []Field{
		str("metrics_path", required),
	}},
	Type{Name: "MmdsContentsObject", Open: true},
	Type{Name: "MmdsConfig", Fields: []Field{
		str("version", oneOf("V1", "V2")),
		array("network_interfaces", str(""), required),
		str("ipv4_address"),
		boolean("imds_compat"),
	}},
	Type{Name: "EntropyDevice", Fields: []Field{
		object("rate_limiter", "RateLimiter"),
	}},
	Type{Name: "SerialDevice", Fields: []Field{
		str("serial_out_path"),
		object("rate_limiter", "TokenBucket"),
	}},
	Type{Name: "MemoryHotplugConfig", Fields: []Field{
		integer("total_size_mib"),
		integer("slot_size_mib", atLeast(128)),
		integer("block_size_mib", atLeast(2)),
	}},
	Type{Name: "MemoryHotplugSizeUpdate", Fields: []Field{
		integer("requested_size_mib"),
	}},
	// mtu: [68, 65535], what VIRTIO_NET_F_MTU may advertise.
	Type{Name: "NetworkInterface", Fields: []Field{
		str("iface_id", required, matching(IDPattern)),
		str("host_dev_name", required),
		str("guest_mac"),
		integer("mtu", atLeast(68), atMost(65535)),
		object("rx_rate_limiter", "RateLimiter"),
		object("tx_rate_limiter", "RateLimiter"),
	}},
	Type{Name: "PartialNetworkInterface", Fields: []Field{
		str("iface_id", required, matching(IDPattern)),
		object("rx_rate_limiter", "RateLimiter"),
		object("tx_rate_limiter", "RateLimiter"),
	}},
	Type{Name: "RateLimiter", Fields: []Field{
		object("bandwidth", "TokenBucket"),
		object("ops", "TokenBucket"),
	}},
	Type{Name: "TokenBucket", Fields: []Field{
		integer("size", required),
		integer("one_time_burst"),
		integer("refill_time", required),
	}},
	Type{Name: "SnapshotCreateParams", Fields: []Field{
		str("mem_file_path", required),
		str("snapshot_path", required),
		str("snapshot_type", oneOf("Full", "Diff")),
	}},
	Type{Name: "SnapshotLoadParams", Fields: []Field{
		str("snapshot_path", required),
		str("mem_file_path", deprecated),
		object("mem_backend", "MemoryBackend"),
		boolean("enable_diff_snapshots", deprecated),
		boolean("track_dirty_pages"),
		boolean("resume_vm"),
		array("network_overrides", object("", "NetworkOverride")),
		object("vsock_override", "VsockOverride"),
		boolean("clock_realtime"),
	}},
	Type{Name: "MemoryBackend", Fields: []Field{
		str("backend_type", required, oneOf("File", "Uffd")),
		str("backend_path", required),
	}},
	Type{Name: "NetworkOverride", Fields: []Field{
		str("iface_id", required),
		str("host_dev_name", required),
	}},
	Type{Name: "VsockOverride", Fields: []Field{
		str("uds_path", required),
	}},
	Type{Name: "Vm", Fields: []Field{
		str("state", required, oneOf("Paused", "Resumed")),
	}},
	// guest_cid: 0-2 are reserved (hypervisor, local, host), so a guest's
	// CID is at least 3. vsock_id is deprecated: Firecracker ignores it.
	Type{Name: "Vsock", Fields: []Field{
		integer("guest_cid", required, atLeast(3), atMost(1<<32-1)),
		str("uds_path", required),
		str("vsock_id", deprecated),
	}},
)
