package cli

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api/client"
	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/sysrun"
)

// runSystem runs `system ARGS` with a fake supervisor and returns the
// options it received (nil when it was not called).
func runSystem(t *testing.T, args ...string) (*sysrun.Options, error) {
	t.Helper()
	dir := t.TempDir()
	layout := paths.New(filepath.Join(dir, "c"), filepath.Join(dir, "s"), filepath.Join(dir, "k"), filepath.Join(dir, "r"))
	var stdout, stderr bytes.Buffer
	e := &env{
		stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, layout: layout,
		cl: client.New(layout.SocketPath, "", ""),
	}
	var got *sysrun.Options
	root := newRoot(e)
	for _, c := range root.Commands() {
		if c.Name() == "system" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(newSystemCommand(e, func(_ context.Context, o sysrun.Options) error {
		got = &o
		return nil
	}))
	root.SetArgs(append([]string{"system"}, args...))
	err := root.ExecuteContext(context.Background())
	return got, err
}

func TestSystemRunArgumentValidation(t *testing.T) {
	long := "/" + strings.Repeat("x", 120) + "/helper.sock"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no owner", []string{"run"}, "--owner USER is required"},
		{"positional", []string{"run", "--owner", "dev", "extra"}, "takes no arguments"},
		{"bad owner", []string{"run", "--owner", "a/b"}, `--owner "a/b"`},
		{"relative meta", []string{"run", "--owner", "dev", "--install-meta", "etc/install.toml"}, "--install-meta"},
		{"unclean socket", []string{"run", "--owner", "dev", "--helper-socket", "/run/../x/h.sock"}, "--helper-socket"},
		{"long socket", []string{"run", "--owner", "dev", "--helper-socket", long}, "too long for a unix socket"},
		{"socket in /", []string{"run", "--owner", "dev", "--helper-socket", "/h.sock"}, "directory of its own"},
		{"relative netns", []string{"run", "--owner", "dev", "--netns", "netns/x"}, "--netns"},
		{"relative state", []string{"run", "--owner", "dev", "--state-dir", "st"}, "--state-dir"},
		{"unknown flag", []string{"run", "--owner", "dev", "--frob"}, "unknown flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := runSystem(t, tc.args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(formatError(err), "banger: bad_request: ") {
				t.Errorf("formatError = %q, want a bad_request", formatError(err))
			}
			if got != nil {
				t.Errorf("supervisor ran with %+v", got)
			}
		})
	}
}

func TestSystemRunPassesOptions(t *testing.T) {
	got, err := runSystem(t, "run", "--owner", "dev")
	if err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatal("supervisor not called")
	}
	if got.Owner != "dev" || got.HelperSocket != sysrun.DefaultHelperSocket || got.HelperStateDir != sysrun.DefaultHelperStateDir ||
		got.InstallMeta != installmeta.DefaultPath || got.Netns != "" || got.Out == nil || got.Log == nil {
		t.Errorf("defaults: got %+v", got)
	}

	got, err = runSystem(t, "run", "--owner", "dev", "--netns", "/run/netns/t", "--helper-socket", "/tmp/b/h.sock",
		"--install-meta", "/tmp/b/install.toml", "--state-dir", "/tmp/b/st")
	if err != nil {
		t.Fatal(err)
	}
	if got.Netns != "/run/netns/t" || got.HelperSocket != "/tmp/b/h.sock" || got.InstallMeta != "/tmp/b/install.toml" || got.HelperStateDir != "/tmp/b/st" {
		t.Errorf("flags: got %+v", got)
	}
}

// TestSystemRunPinsSubnet: --subnet reaches the pins recorded in the
// install metadata; without it, the default subnet is pinned.
func TestSystemRunPinsSubnet(t *testing.T) {
	got, err := runSystem(t, "run", "--owner", "dev")
	if err != nil || got == nil || got.Pins.Subnet != installmeta.DefaultSubnet {
		t.Fatalf("default: %+v, %v", got, err)
	}
	got, err = runSystem(t, "run", "--owner", "dev", "--subnet", "10.9.0.0/24")
	if err != nil || got == nil || got.Pins.Subnet != "10.9.0.0/24" {
		t.Fatalf("--subnet: %+v, %v", got, err)
	}
}
