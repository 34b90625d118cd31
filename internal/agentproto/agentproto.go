// Package agentproto is the wire contract between the host (bangerd, and the
// banger CLI for exec streams) and the guest agent. It imports only the
// standard library so that every side can depend on it.
//
// A transport is any reliable byte stream to the guest: a virtio-serial port
// under QEMU, a vsock connection under Firecracker. On a fresh stream the host
// runs the sync handshake (see Handshake), after which both ends run a yamux
// session: the host is the yamux client and opens one stream per request.
//
// Each stream starts with one JSON request line from the host (Request) and
// one JSON reply line from the guest (Reply). What follows depends on the op:
//
//	ping      nothing.
//	exec      framed stdio in both directions (Frame*), ending with FrameExit.
//	put       exactly Request.Size raw bytes from the host, then a second Reply.
//	get       exactly Reply.Size raw bytes from the guest.
//	hostname  nothing.
//	shutdown  nothing; the guest powers off after replying.
//	ports     nothing; Reply.Ports lists the guest's listening TCP sockets
//	          and bound UDP sockets (at most MaxPorts; Reply.Truncated says
//	          when more were cut).
//	connect   the guest dials TCP Request.Addr in its own network namespace
//	          (host defaults to 127.0.0.1, the dial is bounded) and replies;
//	          after an OK reply the stream is a raw byte pipe in both
//	          directions. Closing one direction (a yamux FIN) half-closes
//	          the TCP connection's write side; EOF from the guest's peer
//	          closes the guest's direction of the stream.
//	stats     nothing; Reply.Stats is the guest's own view of its memory,
//	          load, uptime, processes and the filesystems at / and /root.
//
// Ops are only ever added: an agent that predates an op answers it with an
// "unknown op" error.
package agentproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is bumped whenever the wire contract changes incompatibly.
const Version = 1

// PortName is the virtio-serial port name the agent listens on.
const PortName = "banger.agent"

// VsockPort is the vsock port the agent listens on under Firecracker.
const VsockPort = 52

// MaxLine bounds every JSON line on the wire.
const MaxLine = 64 << 10

// Ops understood by the agent.
const (
	OpPing     = "ping"
	OpExec     = "exec"
	OpPut      = "put"
	OpGet      = "get"
	OpHostname = "hostname"
	OpShutdown = "shutdown"
	OpPorts    = "ports"
	OpConnect  = "connect"
	OpStats    = "stats"
)

// MaxPorts bounds the ports reply so that it fits in one line.
const MaxPorts = 256

// Port is one listening socket in the guest.
type Port struct {
	Proto   string `json:"proto"`             // "tcp" or "udp"
	Addr    string `json:"addr"`              // local address: "0.0.0.0", "::", "127.0.0.1", ...
	Port    uint16 `json:"port"`              // local port
	PID     int    `json:"pid,omitempty"`     // owning process, best effort
	Process string `json:"process,omitempty"` // its command name, best effort
}

// Stats is the guest's view of itself, read from its /proc and statfs.
// Sizes are bytes.
type Stats struct {
	MemTotal     uint64  `json:"mem_total"`     // MemTotal of /proc/meminfo
	MemAvailable uint64  `json:"mem_available"` // MemAvailable (estimated on kernels without it)
	Load1        float64 `json:"load1"`
	Load5        float64 `json:"load5"`
	Load15       float64 `json:"load15"`
	Uptime       float64 `json:"uptime"` // seconds since the guest booted
	Procs        int     `json:"procs"`  // processes, kernel threads included; not threads of a process
	// Filesystems are those at / and /root, in that order; one that could
	// not be read carries Error.
	Filesystems []FSStats `json:"filesystems,omitempty"`
}

// FSStats is one filesystem's usage as df computes it: Used counts blocks
// not free, Avail what unprivileged users may still write.
type FSStats struct {
	Path  string `json:"path"`
	Size  uint64 `json:"size"`
	Used  uint64 `json:"used"`
	Avail uint64 `json:"avail"`
	Error string `json:"error,omitempty"`
}

// Request is the first line of every stream.
type Request struct {
	Op string `json:"op"`

	// exec
	Argv []string `json:"argv,omitempty"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`

	// put / get
	Path   string `json:"path,omitempty"`
	Mode   uint32 `json:"mode,omitempty"`
	Size   int64  `json:"size,omitempty"`
	UID    int    `json:"uid,omitempty"`
	GID    int    `json:"gid,omitempty"`
	Mkdirs bool   `json:"mkdirs,omitempty"`

	// hostname
	Hostname string `json:"hostname,omitempty"`

	// shutdown
	Reboot bool `json:"reboot,omitempty"`

	// connect: "host:port", ":port" or "port"; host defaults to 127.0.0.1.
	Addr string `json:"addr,omitempty"`
}

// Reply is the guest's answer line.
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`

	// ping
	Version  int    `json:"version,omitempty"`
	Agent    string `json:"agent,omitempty"` // agent build version
	Mode     string `json:"mode,omitempty"`  // "pid1" or "service"
	Hostname string `json:"hostname,omitempty"`
	Kernel   string `json:"kernel,omitempty"`

	// get
	Size     int64  `json:"size,omitempty"`
	FileMode uint32 `json:"file_mode,omitempty"`

	// ports
	Ports     []Port `json:"ports,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`

	// stats
	Stats *Stats `json:"stats,omitempty"`
}

// WriteJSONLine writes v as one JSON line.
func WriteJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode line: %w", err)
	}
	b = append(b, '\n')
	if len(b) > MaxLine {
		return fmt.Errorf("encode line: %d bytes exceeds limit %d", len(b), MaxLine)
	}
	_, err = w.Write(b)
	return err
}

// ReadJSONLine reads one bounded JSON line into v. It reads byte by byte so
// that nothing after the newline is consumed from r.
func ReadJSONLine(r io.Reader, v any) error {
	line, err := readLine(r, MaxLine)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode line: %w", err)
	}
	return nil
}

// ErrLineTooLong is returned when a line exceeds its bound.
var ErrLineTooLong = errors.New("line too long")

func readLine(r io.Reader, limit int) ([]byte, error) {
	if br, ok := r.(*bufio.Reader); ok {
		var out []byte
		for {
			frag, err := br.ReadSlice('\n')
			out = append(out, frag...)
			if len(out) > limit {
				return nil, ErrLineTooLong
			}
			if err == nil {
				return out[:len(out)-1], nil
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				return nil, err
			}
		}
	}
	var out []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return out, nil
			}
			out = append(out, b[0])
			if len(out) > limit {
				return nil, ErrLineTooLong
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(out) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Frame types of the exec stream.
const (
	// host -> guest
	FrameStdin    byte = 1 // payload: bytes
	FrameStdinEOF byte = 2 // payload: empty
	FrameResize   byte = 3 // payload: JSON Resize
	FrameSignal   byte = 4 // payload: JSON Signal

	// guest -> host
	FrameStdout byte = 10 // payload: bytes
	FrameStderr byte = 11 // payload: bytes
	FrameExit   byte = 12 // payload: JSON Exit
)

// MaxFrame bounds a frame payload.
const MaxFrame = 1 << 20

// Resize is the payload of FrameResize.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Signal is the payload of FrameSignal: a Linux signal number.
type Signal struct {
	Signal int `json:"signal"`
}

// Exit is the payload of FrameExit.
type Exit struct {
	Code   int    `json:"code"`             // exit status; 128+n when killed by signal n
	Signal int    `json:"signal,omitempty"` // set when killed by a signal
	Error  string `json:"error,omitempty"`  // set when the command could not run at all
}

// WriteFrame writes one frame. Callers serialise concurrent writers.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("write frame: payload %d exceeds %d", len(payload), MaxFrame)
	}
	hdr := make([]byte, 5, 5+len(payload))
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	_, err := w.Write(append(hdr, payload...))
	return err
}

// WriteJSONFrame marshals v as the payload of a frame.
func WriteJSONFrame(w io.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	return WriteFrame(w, typ, b)
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (typ byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("read frame: payload %d exceeds %d", n, MaxFrame)
	}
	// ReadAll grows the buffer with the bytes that arrive, so the declared
	// length never sizes an allocation by itself.
	payload, err = io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return 0, nil, fmt.Errorf("read frame: %w", err)
	}
	if len(payload) < n {
		return 0, nil, fmt.Errorf("read frame: %w", io.ErrUnexpectedEOF)
	}
	return hdr[0], payload, nil
}
