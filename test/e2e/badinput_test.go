package e2e

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput: each bad command fails with one clear "banger:" line naming
// the category, exits non-zero, and changes nothing.
func TestBadInput(t *testing.T) {
	defer group(t)()
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.deb")
	if err := os.WriteFile(corrupt, []byte("!<arch>\ngarbage that is not a deb"), 0o600); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "evil.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	if err := os.WriteFile(evil, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	h.must(t, "vm", "create", "--name", "dup", "--no-start")
	defer h.run("vm", "delete", "dup")

	snapshot := func() string {
		return h.must(t, "vm", "list", "--json") + h.must(t, "image", "list", "--json") + h.must(t, "kernel", "list", "--json")
	}
	before := snapshot()
	for _, tc := range []struct {
		name string
		args []string
		code string
		want string
	}{
		{"uppercase name", []string{"vm", "create", "--no-start", "--name", "Bad"}, "bad_request", "Bad"},
		{"leading dash", []string{"vm", "create", "--no-start", "--name=-x"}, "bad_request", "-x"},
		{"dot in name", []string{"vm", "create", "--no-start", "--name", "a.b"}, "bad_request", "a.b"},
		{"too long", []string{"vm", "create", "--no-start", "--name", strings.Repeat("a", 64)}, "bad_request", "63"},
		{"duplicate", []string{"vm", "create", "--no-start", "--name", "dup"}, "already_exists", "dup"},
		{"unknown image", []string{"vm", "create", "--no-start", "--image", "nope"}, "not_found", "nope"},
		{"memory zero", []string{"vm", "create", "--no-start", "--memory", "0"}, "bad_request", "--memory"},
		{"vcpu over the vmm's limit", []string{"vm", "create", "--no-start", "--vcpu", "256"}, "bad_request", "qemu runs at most 255 vCPUs, not 256"},
		{"set vcpu over the vmm's limit", []string{"vm", "set", "dup", "--vcpu", "256"}, "bad_request", "qemu runs at most 255 vCPUs, not 256"},
		{"missing kernel", []string{"vm", "create", "--no-start", "--kernel", "nokernel"}, "not_found", "nokernel"},
		{"bad disk size", []string{"vm", "create", "--no-start", "--disk-size", "lots"}, "bad_request", "lots"},
		{"corrupt deb", []string{"kernel", "import-deb", corrupt, "--name", "broken"}, "bad_request", "corrupt.deb"},
		{"tar escape", []string{"image", "import", evil, "--name", "evil"}, "bad_request", "../escape"},
		{"unknown vm", []string{"vm", "stop", "ghost"}, "not_found", "ghost"},
		{"unknown flag", []string{"vm", "create", "--bogus"}, "bad_request", "bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.run(tc.args...)
			if r.code == 0 {
				t.Fatalf("exit 0, want failure (stdout %q)", r.stdout)
			}
			line := strings.TrimSpace(r.stderr)
			if strings.Count(line, "\n") != 0 {
				t.Errorf("stderr is not one line: %q", r.stderr)
			}
			if !strings.HasPrefix(line, "banger: "+tc.code+": ") {
				t.Errorf("stderr = %q, want prefix %q", line, "banger: "+tc.code+": ")
			}
			if !strings.Contains(line, tc.want) {
				t.Errorf("stderr = %q, want it to name %q", line, tc.want)
			}
		})
	}
	if after := snapshot(); after != before {
		t.Errorf("state changed by bad input:\nbefore %s\nafter  %s", before, after)
	}
}
