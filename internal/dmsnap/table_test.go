package dmsnap

import (
	"strings"
	"testing"
)

func TestSnapshotTarget(t *testing.T) {
	tests := []struct {
		name        string
		sectors     uint64
		origin, cow string
		chunk       uint32
		want        string
		err         string
	}{
		{"devnums", 16384, "7:0", "7:1", 8, "0 16384 snapshot 7:0 7:1 P 8", ""},
		{"paths", 2048, "/dev/loop3", "/dev/loop4", 16, "0 2048 snapshot /dev/loop3 /dev/loop4 P 16", ""},
		{"zero length", 0, "7:0", "7:1", 8, "", "zero-length"},
		{"same device", 8, "7:0", "7:0", 8, "", "same device"},
		{"chunk not power of two", 8, "7:0", "7:1", 12, "", "power of two"},
		{"chunk too small", 8, "7:0", "7:1", 4, "", "power of two"},
		{"chunk too big", 8, "7:0", "7:1", 4096, "", "power of two"},
		{"space in origin", 8, "7:0 x", "7:1", 8, "", "origin device"},
		{"relative origin", 8, "loop0", "7:1", 8, "", "origin device"},
		{"newline in cow", 8, "7:0", "7:1\n0 8 linear", 8, "", "cow device"},
		{"bad devnum", 8, "7:x", "7:1", 8, "", "origin device"},
		{"empty cow", 8, "7:0", "", 8, "", "cow device"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SnapshotTarget(tc.sectors, tc.origin, tc.cow, tc.chunk)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Fatalf("table = %q, want %q", got.String(), tc.want)
			}
			back, err := ParseTarget(got.String())
			if err != nil || back != got {
				t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", got.String(), back, err, got)
			}
		})
	}
}

func TestThinTargets(t *testing.T) {
	pool, err := ThinPoolTarget(1<<21, "253:0", "253:1", 128, 32768, "skip_block_zeroing")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pool.String(), "0 2097152 thin-pool 253:0 253:1 128 32768 1 skip_block_zeroing"; got != want {
		t.Errorf("pool = %q, want %q", got, want)
	}
	pool, err = ThinPoolTarget(1<<21, "/dev/loop0", "/dev/loop1", 2048, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pool.String(), "0 2097152 thin-pool /dev/loop0 /dev/loop1 2048 0 0"; got != want {
		t.Errorf("pool = %q, want %q", got, want)
	}
	thin, err := ThinTarget(16384, "253:2", 7)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := thin.String(), "0 16384 thin 253:2 7"; got != want {
		t.Errorf("thin = %q, want %q", got, want)
	}
	for _, bad := range []func() error{
		func() error { _, err := ThinPoolTarget(0, "1:1", "1:2", 128, 0); return err },
		func() error { _, err := ThinPoolTarget(8, "1:1", "1:2", 100, 0); return err },
		func() error { _, err := ThinPoolTarget(8, "1:1", "1:2", 128, 0, "two words"); return err },
		func() error { _, err := ThinPoolTarget(8, "x", "1:2", 128, 0); return err },
		func() error { _, err := ThinTarget(8, "1:1", 1<<24); return err },
		func() error { _, err := ThinTarget(0, "1:1", 1); return err },
	} {
		if bad() == nil {
			t.Error("a bad thin target was accepted")
		}
	}
}

func TestParseTargetAndTable(t *testing.T) {
	for _, bad := range []string{"", "0 8", "x 8 linear", "0 y linear", "0 0 linear 7:0 0", "0 8 averyveryverylongtype"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
	ts, err := ParseTable([]byte("0 8 linear 7:0 0\n8 8 linear 7:1 0\n\n"))
	if err != nil || len(ts) != 2 || ts[1].Start != 8 || ts[1].Params != "7:1 0" {
		t.Fatalf("ParseTable = %+v, %v", ts, err)
	}
	if got := FormatTable(ts); got != "0 8 linear 7:0 0\n8 8 linear 7:1 0\n" {
		t.Errorf("FormatTable = %q", got)
	}
	if err := (Target{Length: 1, Type: "linear", Params: "a\x00b"}).Validate(); err == nil {
		t.Error("NUL in params accepted")
	}
}

func TestNames(t *testing.T) {
	for id, ok := range map[string]bool{
		"vm1": true, "A-b-9": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "a/b": false, "a b": false, "a_b": false, "a.b": false, "é": false,
	} {
		name, err := DeviceName(id)
		if (err == nil) != ok {
			t.Errorf("DeviceName(%q) err = %v, want ok=%v", id, err, ok)
		}
		if ok {
			if name != "banger-"+id {
				t.Errorf("DeviceName(%q) = %q", id, name)
			}
			if back, ok := IDFromName(name); !ok || back != id {
				t.Errorf("IDFromName(%q) = %q, %v", name, back, ok)
			}
		}
	}
	if _, ok := IDFromName("other-vm1"); ok {
		t.Error("IDFromName accepted a foreign name")
	}
	u := deviceUUID("vm1", newToken())
	if !strings.HasPrefix(u, UUIDPrefix+"vm1-") || len(u) != len(UUIDPrefix)+4+16 || checkUUID(u) != nil {
		t.Errorf("uuid %q", u)
	}
	if deviceUUID("vm1", newToken()) == u {
		t.Error("two tokens are equal")
	}
	if long := deviceUUID(strings.Repeat("a", 64), newToken()); checkIoctlUUID(long) != nil || checkUUID(long) != nil {
		t.Errorf("the longest uuid %q does not fit", long)
	}
}
