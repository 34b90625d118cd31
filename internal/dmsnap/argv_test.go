package dmsnap

import (
	"reflect"
	"strings"
	"testing"
)

func TestLosetupArgs(t *testing.T) {
	tests := []struct {
		name string
		got  func() ([]string, error)
		want []string
	}{
		{"attach ro", func() ([]string, error) { return LosetupAttachArgs("/var/lib/b/base.img", true) },
			[]string{"--find", "--show", "--read-only", "/var/lib/b/base.img"}},
		{"attach rw", func() ([]string, error) { return LosetupAttachArgs("/var/lib/b/vm 1.cow", false) },
			[]string{"--find", "--show", "/var/lib/b/vm 1.cow"}},
		{"relative", func() ([]string, error) { return LosetupAttachArgs("-o1", false) }, nil},
		{"unclean", func() ([]string, error) { return LosetupAttachArgs("/a/../etc/shadow", false) }, nil},
		{"newline", func() ([]string, error) { return LosetupAttachArgs("/a/b\nc", false) }, nil},
		{"root", func() ([]string, error) { return LosetupAttachArgs("/", false) }, nil},
		{"detach", func() ([]string, error) { return LosetupDetachArgs("/dev/loop12") }, []string{"--detach", "/dev/loop12"}},
		{"detach other", func() ([]string, error) { return LosetupDetachArgs("/dev/sda") }, nil},
		{"detach option", func() ([]string, error) { return LosetupDetachArgs("--all") }, nil},
		{"list", func() ([]string, error) { return LosetupListArgs(), nil },
			[]string{"--list", "--noheadings", "--raw", "--output", "NAME,MAJ:MIN,RO,AUTOCLEAR,BACK-MAJ:MIN,BACK-INO,BACK-FILE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.got()
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted: %q", got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestDmsetupArgs(t *testing.T) {
	snap := Target{Length: 16384, Type: "snapshot", Params: "7:0 7:1 P 8"}
	lin := Target{Length: 8, Type: "linear", Params: "7:2 0"}
	args, stdin, err := DmsetupCreateArgs("banger-vm1", "banger-dmsnap-vm1-00", []Target{snap})
	if want := []string{"create", "banger-vm1", "--uuid", "banger-dmsnap-vm1-00", "--table", "0 16384 snapshot 7:0 7:1 P 8"}; err != nil || stdin != "" || !reflect.DeepEqual(args, want) {
		t.Errorf("create = %q, %q, %v; want %q", args, stdin, err, want)
	}
	args, stdin, err = DmsetupCreateArgs("banger-vm1", "u-1", []Target{snap, {Start: 16384, Length: 8, Type: "linear", Params: "7:2 0"}})
	if want := []string{"create", "banger-vm1", "--uuid", "u-1"}; err != nil || !reflect.DeepEqual(args, want) ||
		stdin != "0 16384 snapshot 7:0 7:1 P 8\n16384 8 linear 7:2 0\n" {
		t.Errorf("create (stdin) = %q, %q, %v", args, stdin, err)
	}
	for _, bad := range []struct{ name, uuid string }{
		{"vm1", "u"}, {"banger-", "u"}, {"banger-a b", "u"}, {"banger--x;rm", "u"}, {"banger-vm1", ""}, {"banger-vm1", "a b"},
		{"banger-vm1", strings.Repeat("u", 129)},
	} {
		if _, _, err := DmsetupCreateArgs(bad.name, bad.uuid, []Target{lin}); err == nil {
			t.Errorf("create %q %q accepted", bad.name, bad.uuid)
		}
	}
	if _, _, err := DmsetupCreateArgs("banger-vm1", "u", nil); err == nil {
		t.Error("empty table accepted")
	}
	if _, _, err := DmsetupCreateArgs("banger-vm1", "u", []Target{{Length: 8, Type: "linear", Params: "7:2 0\n0 8 zero"}}); err == nil {
		t.Error("a second line smuggled in the params was accepted")
	}

	rm, err := DmsetupRemoveArgs("banger-dmsnap-vm1-00", true)
	if want := []string{"remove", "--retry", "--uuid", "banger-dmsnap-vm1-00"}; err != nil || !reflect.DeepEqual(rm, want) {
		t.Errorf("remove = %q, %v", rm, err)
	}
	rm, err = DmsetupRemoveArgs("banger-dmsnap-vm1-00", false)
	if want := []string{"remove", "--uuid", "banger-dmsnap-vm1-00"}; err != nil || !reflect.DeepEqual(rm, want) {
		t.Errorf("remove = %q, %v", rm, err)
	}
	if _, err := DmsetupRemoveArgs("-f", false); err == nil {
		t.Error("remove -f accepted")
	}

	info, err := DmsetupInfoArgs("banger-vm1")
	if want := []string{"info", "-c", "--noheadings", "--separator", ":", "-o", "name,uuid,major,minor,open", "banger-vm1"}; err != nil || !reflect.DeepEqual(info, want) {
		t.Errorf("info = %q, %v", info, err)
	}
	if info, err := DmsetupInfoArgs(""); err != nil || len(info) != 7 {
		t.Errorf("info all = %q, %v", info, err)
	}
	if _, err := DmsetupInfoArgs("sda"); err == nil {
		t.Error("info of a foreign name accepted")
	}
	ls, err := DmsetupLsArgs("snapshot")
	if want := []string{"ls", "--target", "snapshot"}; err != nil || !reflect.DeepEqual(ls, want) {
		t.Errorf("ls = %q, %v", ls, err)
	}
	if ls, err := DmsetupLsArgs(""); err != nil || !reflect.DeepEqual(ls, []string{"ls"}) {
		t.Errorf("ls = %q, %v", ls, err)
	}
	if _, err := DmsetupLsArgs("a b"); err == nil {
		t.Error("ls with two words accepted")
	}
	tb, err := DmsetupTableArgs("banger-vm1")
	if err != nil || !reflect.DeepEqual(tb, []string{"table", "banger-vm1"}) {
		t.Errorf("table = %q, %v", tb, err)
	}
}

func TestParseLosetupList(t *testing.T) {
	out := "/dev/loop0 7:0 1 1 259:2 1234 /var/lib/banger/base.img\n" +
		`/dev/loop1 7:1 0 0 259:2 99 /var/lib/banger/vm\x201.cow\x20(deleted)` + "\n"
	got, err := ParseLosetupList([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Loop{
		{Path: "/dev/loop0", Major: 7, Minor: 0, ReadOnly: true, Autoclear: true, BackingDev: mkdev(259, 2), BackingIno: 1234, Backing: "/var/lib/banger/base.img"},
		{Path: "/dev/loop1", Major: 7, Minor: 1, BackingDev: mkdev(259, 2), BackingIno: 99, Backing: "/var/lib/banger/vm 1.cow", Deleted: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// util-linux pads the numeric columns and escapes the padding; a loop
	// being bound meanwhile shows empty backing columns.
	padded := `/dev/loop1 \x20\x207:1\x20\x20 1 0 \x20\x20\x20\x20\x20\x20\x200:22\x20 67 /tmp/T/001/base.img` + "\n" +
		`/dev/loop12 \x207:12\x20 1 0   ` + "\n"
	got, err = ParseLosetupList([]byte(padded))
	if err != nil {
		t.Fatal(err)
	}
	want = []Loop{
		{Path: "/dev/loop1", Major: 7, Minor: 1, ReadOnly: true, BackingDev: mkdev(0, 22), BackingIno: 67, Backing: "/tmp/T/001/base.img"},
		{Path: "/dev/loop12", Major: 7, Minor: 12, ReadOnly: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("padded: got %+v\nwant %+v", got, want)
	}
	if l, err := ParseLosetupList(nil); err != nil || l != nil {
		t.Errorf("empty: %v, %v", l, err)
	}
	for _, bad := range []string{"/dev/loop0 7:0 1 1\n", "/dev/loop0 x 1 1 1:1 1 /a\n", "/dev/loop0 7:0 1 1 1:1 x /a\n"} {
		if _, err := ParseLosetupList([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if got := unescapeRaw(`a\x5cb\x2`); got != `a\b\x2` {
		t.Errorf("unescapeRaw = %q", got)
	}
}

func TestParseDmsetupOutput(t *testing.T) {
	info := "banger-vm1:banger-dmsnap-vm1-00:253:0:1\nvg-root:LVM-abc:253:1:1\nweird:name:x:253:2:0\nNo devices found\n"
	got, err := ParseDmsetupInfo([]byte(info))
	if err != nil {
		t.Fatal(err)
	}
	want := []DMDevice{
		{Name: "banger-vm1", UUID: "banger-dmsnap-vm1-00", Major: 253, Minor: 0, OpenCount: 1},
		{Name: "vg-root", UUID: "LVM-abc", Major: 253, Minor: 1, OpenCount: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("info = %+v, want %+v", got, want)
	}
	if _, err := ParseDmsetupInfo([]byte("a:b:c:d:e\n")); err == nil {
		t.Error("non-numeric info accepted")
	}
	ls, err := ParseDmsetupLs([]byte("banger-vm1\t(253:0)\nold\t(253, 7)\n"))
	if err != nil || !reflect.DeepEqual(ls, []DMDevice{{Name: "banger-vm1", Major: 253}, {Name: "old", Major: 253, Minor: 7}}) {
		t.Errorf("ls = %+v, %v", ls, err)
	}
	if ls, err := ParseDmsetupLs([]byte("No devices found\n")); err != nil || ls != nil {
		t.Errorf("ls none = %+v, %v", ls, err)
	}
	if _, err := ParseDmsetupLs([]byte("garbage\n")); err == nil {
		t.Error("garbage ls accepted")
	}
}
