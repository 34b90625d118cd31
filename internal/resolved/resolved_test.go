package resolved

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResolvectlArgs(t *testing.T) {
	srv := netip.MustParseAddrPort("172.16.0.1:42069")
	tests := []struct {
		name   string
		a      action
		link   string
		zone   string
		server netip.AddrPort
		want   string // argvs joined by " | "; "" when an error is wanted
	}{
		{"sync", actionSync, "br-fc", "vm", srv,
			"default-route br-fc false | domain br-fc ~vm | dns br-fc 172.16.0.1:42069"},
		{"sync other bridge and zone", actionSync, "br-fc-t1", "test", netip.MustParseAddrPort("10.0.0.1:53"),
			"default-route br-fc-t1 false | domain br-fc-t1 ~test | dns br-fc-t1 10.0.0.1:53"},
		{"revert", actionRevert, "br-fc", "vm", netip.AddrPort{}, "revert br-fc"},
		{"revert ignores server", actionRevert, "br-fc", "", srv, "revert br-fc"},
		{"link like an option", actionSync, "-h", "vm", srv, ""},
		{"link empty", actionRevert, "", "vm", srv, ""},
		{"link too long", actionRevert, "br-fc-0123456789", "vm", srv, ""},
		{"link with space", actionRevert, "br fc", "vm", srv, ""},
		{"link with slash", actionRevert, "br/fc", "vm", srv, ""},
		{"zone with dot", actionSync, "br-fc", "vm.", srv, ""},
		{"zone like routing domain", actionSync, "br-fc", "~vm", srv, ""},
		{"zone empty", actionSync, "br-fc", "", srv, ""},
		{"server missing", actionSync, "br-fc", "vm", netip.AddrPort{}, ""},
		{"server port 0", actionSync, "br-fc", "vm", netip.MustParseAddrPort("172.16.0.1:0"), ""},
		{"server ipv6", actionSync, "br-fc", "vm", netip.MustParseAddrPort("[fd00::1]:53"), ""},
		{"unknown action", action(0), "br-fc", "vm", srv, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			argvs, err := resolvectlArgs(tc.a, tc.link, tc.zone, tc.server)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("resolvectlArgs accepted it: %q", argvs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := joinArgvs(argvs); got != tc.want {
				t.Errorf("argv:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func joinArgvs(argvs [][]string) string {
	var parts []string
	for _, a := range argvs {
		parts = append(parts, strings.Join(a, " "))
	}
	return strings.Join(parts, " | ")
}

func TestParseSystemdVersion(t *testing.T) {
	tests := map[string]int{
		"systemd 252 (252.22-1~deb12u1)\n+PAM +AUDIT\n": 252,
		"systemd 245 (245.4-4ubuntu3.24)\n":             245,
		"systemd 246\n":                                 246,
		"  systemd 255 (255.4-1ubuntu8)":                255,
		"":                                              -1,
		"resolvectl 252":                                -1,
		"systemd two-fifty":                             -1,
		"systemd 2520000 (x)":                           -1,
	}
	for in, want := range tests {
		got, err := parseSystemdVersion([]byte(in))
		if want < 0 {
			if err == nil {
				t.Errorf("parseSystemdVersion(%q) = %d, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("parseSystemdVersion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// fakeRunner records each run as "BIN ARGS..." and answers from a table
// keyed by the first argument.
type fakeRunner struct {
	calls []string
	out   map[string]string
	fail  map[string]error
}

func (f *fakeRunner) Run(_ context.Context, bin string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.Join(append([]string{filepath.Base(bin)}, args...), " "))
	key := ""
	if len(args) > 0 {
		key = args[0]
	}
	if err := f.fail[key]; err != nil {
		return nil, err
	}
	return []byte(f.out[key]), nil
}

func newTest(t *testing.T, version string, withDir bool, haveBin bool) (*Resolved, *fakeRunner) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "resolve")
	if withDir {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fr := &fakeRunner{out: map[string]string{"--version": version}, fail: map[string]error{}}
	r := &Resolved{
		Runner:     fr,
		RuntimeDir: dir,
		LookPath: func(bin string) (string, error) {
			if !haveBin {
				return "", fmt.Errorf("find %s: not installed", bin)
			}
			return "/opt/fake/" + bin, nil
		},
	}
	return r, fr
}

func TestAvailable(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		version  string
		dir, bin bool
		want     bool
		reason   string
	}{
		{"ok", "systemd 252 (252.22)\n", true, true, true, ""},
		{"exactly 246", "systemd 246\n", true, true, true, ""},
		{"no resolvectl", "", true, false, false, "systemd-resolved not available on this host: resolvectl not found; see docs/dns.md"},
		{"not running", "systemd 252\n", false, true, false, "is not running"},
		{"too old", "systemd 245 (245.4)\n", true, true, false, "systemd 245; routing .vm to an IP:PORT server needs 246 or newer; see docs/dns.md"},
		{"garbled version", "hello\n", true, true, false, "unrecognized"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, fr := newTest(t, tc.version, tc.dir, tc.bin)
			ok, reason := r.Available(ctx)
			if ok != tc.want || !strings.Contains(reason, tc.reason) {
				t.Errorf("Available = %v, %q; want %v mentioning %q", ok, reason, tc.want, tc.reason)
			}
			if !ok && !strings.HasSuffix(reason, "see docs/dns.md") {
				t.Errorf("reason %q does not point at docs/dns.md", reason)
			}
			for _, c := range fr.calls {
				if c != "resolvectl --version" {
					t.Errorf("Available ran %q; it may only read the version", c)
				}
			}
		})
	}
}

func TestSyncAndRevert(t *testing.T) {
	ctx := context.Background()
	r, fr := newTest(t, "systemd 252\n", true, true)
	if err := r.Sync(ctx, "br-fc", netip.MustParseAddrPort("172.16.0.1:42069")); err != nil {
		t.Fatal(err)
	}
	if err := r.Revert(ctx, "br-fc"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"resolvectl default-route br-fc false",
		"resolvectl domain br-fc ~vm",
		"resolvectl dns br-fc 172.16.0.1:42069",
		"resolvectl revert br-fc",
	}
	if !slices.Equal(fr.calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(fr.calls, "\n"), strings.Join(want, "\n"))
	}
}

func TestSyncFailureReverts(t *testing.T) {
	ctx := context.Background()
	r, fr := newTest(t, "systemd 252\n", true, true)
	boom := errors.New("Failed to set DNS configuration: Link br-fc not known")
	fr.fail["dns"] = boom
	err := r.Sync(ctx, "br-fc", netip.MustParseAddrPort("172.16.0.1:42069"))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "route .vm on br-fc") {
		t.Fatalf("Sync = %v, want it to wrap %v", err, boom)
	}
	if last := fr.calls[len(fr.calls)-1]; last != "resolvectl revert br-fc" {
		t.Errorf("after a failed sync the last call is %q, want a revert", last)
	}
	// Nothing runs for a link that could be taken for an option.
	fr.calls = nil
	if err := r.Sync(ctx, "--help", netip.MustParseAddrPort("172.16.0.1:42069")); err == nil || len(fr.calls) != 0 {
		t.Errorf("Sync(--help) = %v after calls %v, want a refusal before running anything", err, fr.calls)
	}
}

func TestDisabled(t *testing.T) {
	d := Disabled{Reason: "helper serves netns x"}
	if ok, reason := d.Available(context.Background()); ok || reason != d.Reason {
		t.Errorf("Available = %v, %q", ok, reason)
	}
	if err := d.Sync(context.Background(), "br-fc", netip.MustParseAddrPort("172.16.0.1:53")); !errors.Is(err, errDisabled) {
		t.Errorf("Sync = %v", err)
	}
	if err := d.Revert(context.Background(), "br-fc"); !errors.Is(err, errDisabled) {
		t.Errorf("Revert = %v", err)
	}
}
