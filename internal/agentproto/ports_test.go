package agentproto

import (
	"bytes"
	"strings"
	"testing"
)

// The largest possible ports reply still fits in one line.
func TestMaxPortsFitsInALine(t *testing.T) {
	worst := Port{
		Proto:   "udp",
		Addr:    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		Port:    65535,
		PID:     4194304,                    // pid_max limit
		Process: strings.Repeat("\x01", 15), // comm is 15 bytes; control bytes escape to 6
	}
	rep := Reply{OK: true, Truncated: true}
	for range MaxPorts {
		rep.Ports = append(rep.Ports, worst)
	}
	var buf bytes.Buffer
	if err := WriteJSONLine(&buf, rep); err != nil {
		t.Fatal(err)
	}
	var got Reply
	if err := ReadJSONLine(&buf, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Ports) != MaxPorts || got.Ports[0] != worst || !got.Truncated {
		t.Fatalf("round trip lost data: %d ports", len(got.Ports))
	}
}

// New request fields stay off the wire when unused, so older agents see
// the same lines as before.
func TestNewFieldsOmitted(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSONLine(&buf, Request{Op: OpPing}); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != `{"op":"ping"}`+"\n" {
		t.Fatalf("ping request = %q", got)
	}
	buf.Reset()
	if err := WriteJSONLine(&buf, Reply{OK: true}); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != `{"ok":true}`+"\n" {
		t.Fatalf("reply = %q", got)
	}
}
