// Package cmdline parses the kernel command line parameters the guest agent
// understands (root=, rootfstype=, banger.*). The host builds the command
// line; the agent only reads it.
package cmdline

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Transports selectable with banger.transport=. Each VMM driver names its
// own on the command line; auto is what an agent assumes when a command line
// (an older bangerd's, or a hand-written one) names none.
const (
	TransportAuto         = "auto" // whichever device the VMM provides
	TransportVirtioSerial = "virtio-serial"
	TransportVsock        = "vsock"
)

// MaxPorts bounds banger.agentports=: a virtio-serial device has at most
// 31 ports besides its console slot.
const MaxPorts = 31

// TransportArg is the command line parameter naming transport kind. A
// driver appends it after everything else, so it wins over a value a user
// put in the kernel arguments (the last occurrence counts).
func TransportArg(kind string) string { return "banger.transport=" + kind }

// Params are the boot parameters relevant to the agent.
type Params struct {
	Root       string // root= (default /dev/vda)
	RootFSType string // rootfstype= (default ext4)
	Work       string // banger.work=: block device mounted at /root
	Hostname   string // banger.hostname=
	Init       string // banger.init=: explicit init path in the new root
	Transport  string // banger.transport= (default auto)
	Net        string // banger.net=ADDR/LEN,gw=GW,dns=DNS,mtu=N: static guest addressing
	// Ports is banger.agentports=N: how many virtio-serial agent ports to
	// serve at once (default 1). Only a VMM emulating a multiplexed
	// transport over virtio-serial gives more than one.
	Ports int
}

// Parse extracts Params from the text of /proc/cmdline. Later occurrences
// win, as in the kernel. Quoted values ("a b") are unquoted.
func Parse(s string) Params {
	p := Params{Root: "/dev/vda", RootFSType: "ext4", Transport: TransportAuto, Ports: 1}
	for _, f := range fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "root":
			p.Root = v
		case "rootfstype":
			p.RootFSType = v
		case "banger.work":
			p.Work = v
		case "banger.hostname":
			p.Hostname = v
		case "banger.init":
			p.Init = v
		case "banger.transport":
			p.Transport = v
		case "banger.net":
			p.Net = v
		case "banger.agentports":
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= MaxPorts {
				p.Ports = n
			}
		}
	}
	return p
}

// fields splits on whitespace but keeps double-quoted runs together, the way
// the kernel does for parameter values.
func fields(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// Read parses /proc/cmdline.
func Read() (Params, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return Parse(""), fmt.Errorf("read kernel command line: %w", err)
	}
	return Parse(string(b)), nil
}
