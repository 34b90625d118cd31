package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api/client"
	"banger/internal/errdefs"
	"banger/internal/paths"
)

func TestFormatError(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{errdefs.NotFound("vm %q not found", "dev"), `banger: not_found: vm "dev" not found`},
		{fmt.Errorf("start: %w", errdefs.Exists("vm x already exists")), "banger: already_exists: start: vm x already exists"},
		{errdefs.Conflict("vm is running"), "banger: conflict: vm is running"},
		{errdefs.Unavailable("bangerd is not running"), "banger: unavailable: bangerd is not running"},
		{errdefs.Invalid("bad size"), "banger: bad_request: bad size"},
		{errdefs.FromCode(errdefs.CodeNotFound, "from the wire"), "banger: not_found: from the wire"},
		{usageError{errors.New("takes no arguments")}, "banger: bad_request: takes no arguments"},
		{fmt.Errorf("wrapped: %w", usageError{errors.New("x")}), "banger: bad_request: wrapped: x"},
		{errors.New("disk on fire"), "banger: error: disk on fire"},
		{errdefs.FromCode(errdefs.CodeInternal, "daemon bug"), "banger: error: daemon bug"},
		{errors.New("line one\nline two"), "banger: error: line one line two"},
	}
	for _, tc := range tests {
		if got := formatError(tc.err); got != tc.want {
			t.Errorf("formatError(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// run executes the CLI with a client pointing at a socket where no daemon
// listens and no daemon binary to start, so any attempt to reach bangerd
// fails as unavailable.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	layout := paths.New(filepath.Join(dir, "config"), filepath.Join(dir, "state"), filepath.Join(dir, "cache"), filepath.Join(dir, "run"))
	var stdout, stderr bytes.Buffer
	e := &env{
		stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, layout: layout,
		cl: client.New(layout.SocketPath, "", filepath.Join(dir, "bangerd.log")),
	}
	root := newRoot(e)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), err
}

func TestVMRunArgumentValidation(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"detach and rm", []string{"vm", "run", "-d", "--rm"}, "-d and --rm cannot be combined"},
		{"detach with command", []string{"vm", "run", "-d", "--", "true"}, "-d cannot be combined with a command"},
		{"two arguments before --", []string{"vm", "run", "a", "b", "--", "true"}, `unexpected argument "b"`},
		{"workspace that is not a directory", []string{"vm", "run", "/nonexistent-banger-path", "--", "true"}, "/nonexistent-banger-path"},
		{"dry run without workspace", []string{"vm", "run", "--dry-run"}, "need a workspace PATH"},
		{"nothing after --", []string{"vm", "run", "--"}, "nothing after --"},
		{"unknown flag", []string{"vm", "run", "--frobnicate"}, "unknown flag: --frobnicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, tc.args...)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to contain %q", err, tc.want)
			}
			if errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("err = %v: the daemon was contacted", err)
			}
			if got := formatError(err); !strings.HasPrefix(got, "banger: bad_request: ") {
				t.Errorf("formatError = %q, want a bad_request line", got)
			}
		})
	}
}

// TestVMRunValidReachesDaemon is the control for the test above: valid
// arguments get past validation and fail only because no daemon runs.
func TestVMRunValidReachesDaemon(t *testing.T) {
	for _, args := range [][]string{
		{"vm", "run", "--rm", "--", "true"},
		{"vm", "run", "-d"},
	} {
		_, err := run(t, args...)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("%q: err = %v, want unavailable (no daemon)", args, err)
		}
		var ue usageError
		if errors.As(err, &ue) {
			t.Errorf("%q: got a usage error: %v", args, err)
		}
	}
}

func TestArgCountValidation(t *testing.T) {
	_, err := run(t, "version", "extra")
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "takes no arguments") {
		t.Fatalf("version extra: err = %v, want a usage error", err)
	}
}

func TestVersionWithoutDaemon(t *testing.T) {
	out, err := run(t, "version")
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	if !strings.HasPrefix(out, "banger ") || strings.Contains(out, "bangerd") {
		t.Fatalf("version output %q: want only the CLI version when no daemon runs", out)
	}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		in     string
		listen string
		guest  int
		ok     bool
	}{
		{"8080:80", "127.0.0.1:8080", 80, true},
		{"0.0.0.0:8080:80", "0.0.0.0:8080", 80, true},
		{"[::1]:8080:80", "[::1]:8080", 80, true},
		{"0:22", "127.0.0.1:0", 22, true},
		{"8080", "", 0, false},
		{"8080:0", "", 0, false},
		{"8080:70000", "", 0, false},
		{"host:8080:80", "", 0, false},
		{"x:80", "", 0, false},
	} {
		l, g, err := parseForward(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (l != tc.listen || g != tc.guest)) {
			t.Errorf("parseForward(%q) = %q, %d, %v; want %q, %d, ok=%v", tc.in, l, g, err, tc.listen, tc.guest, tc.ok)
		}
	}
}
