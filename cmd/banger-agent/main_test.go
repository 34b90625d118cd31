package main

import "testing"

func TestSelectRole(t *testing.T) {
	cases := []struct {
		pid    int
		args   []string
		marker bool
		want   string
		fail   bool
	}{
		{pid: 1, marker: true, want: roleInitramfs},
		{pid: 1, args: []string{"pid1"}, marker: true, want: roleInitramfs},
		{pid: 1, want: rolePID1},
		{pid: 1, args: []string{"pid1"}, want: rolePID1},
		{pid: 42, args: []string{"serve"}, want: roleService},
		{pid: 42, args: []string{"version"}, want: roleVersion},
		{pid: 42, args: []string{"pid1"}, want: rolePID1},
		{pid: 42, fail: true},
		{pid: 42, args: []string{"bogus"}, fail: true},
	}
	for _, c := range cases {
		got, err := selectRole(c.pid, c.args, c.marker)
		if (err != nil) != c.fail || got != c.want {
			t.Errorf("selectRole(%d, %q, %v) = %q, %v; want %q (fail=%v)", c.pid, c.args, c.marker, got, err, c.want, c.fail)
		}
	}
}
