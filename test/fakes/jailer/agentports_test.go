package main

import (
	"slices"
	"testing"
)

func TestExtraPortArgs(t *testing.T) {
	for _, tc := range []struct {
		socks []string
		want  []string
	}{
		{[]string{"/d/agent0.sock"}, nil},
		{[]string{"/d/agent0.sock", "/d/a,1.sock", "/d/agent2.sock"}, []string{
			"-device", "virtio-serial-device,id=agentports,max_ports=3",
			"-chardev", "socket,id=agent1,path=/d/a,,1.sock,server=on,wait=off",
			"-device", "virtserialport,bus=agentports.0,chardev=agent1,name=banger.agent.1,id=agentport1",
			"-chardev", "socket,id=agent2,path=/d/agent2.sock,server=on,wait=off",
			"-device", "virtserialport,bus=agentports.0,chardev=agent2,name=banger.agent.2,id=agentport2",
		}},
	} {
		if got := extraPortArgs(tc.socks); !slices.Equal(got, tc.want) {
			t.Errorf("extraPortArgs(%q) =\n%q\nwant\n%q", tc.socks, got, tc.want)
		}
	}
}

func TestPortIndex(t *testing.T) {
	for _, tc := range []struct {
		id   string
		n    int
		want int
		ok   bool
	}{
		{"agentport", 1, 0, true},
		{"agentport3", 4, 3, true},
		{"agentport4", 4, 0, false},
		{"other", 4, 0, false},
	} {
		if got, ok := portIndex(tc.id, tc.n); got != tc.want || ok != tc.ok {
			t.Errorf("portIndex(%q, %d) = %d, %v", tc.id, tc.n, got, ok)
		}
	}
}
