package fakeargs

import (
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	spec := Spec{Bools: []string{"daemonize"}, Values: []string{"id", "uid"}, Multi: []string{"cgroup"}}
	p, err := Parse(spec, []string{"--id", "a", "--uid=5", "--cgroup", "x=1", "--cgroup=y=2", "--daemonize", "--", "--api-sock", "/s"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Values["id"] != "a" || p.Values["uid"] != "5" || !p.Bools["daemonize"] {
		t.Fatalf("parsed %+v", p)
	}
	if !reflect.DeepEqual(p.Multi["cgroup"], []string{"x=1", "y=2"}) {
		t.Fatalf("cgroup = %q", p.Multi["cgroup"])
	}
	if !reflect.DeepEqual(p.Extra, []string{"--api-sock", "/s"}) {
		t.Fatalf("extra = %q", p.Extra)
	}
	if !p.Has("id") || !p.Has("daemonize") || p.Has("gid") {
		t.Fatal("Has is wrong")
	}
}

func TestParseErrors(t *testing.T) {
	spec := Spec{Bools: []string{"daemonize"}, Values: []string{"id"}}
	for _, args := range [][]string{
		{"--nope"},
		{"-id", "x"},
		{"positional"},
		{"--id"},
		{"--id", "--"},
		{"--id", "a", "--id", "b"},
		{"--daemonize=yes"},
		{"--daemonize", "--daemonize"},
	} {
		if _, err := Parse(spec, args); err == nil {
			t.Errorf("Parse(%q) succeeded", args)
		}
	}
}
