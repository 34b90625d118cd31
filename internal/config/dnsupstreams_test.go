package config

import (
	"strings"
	"testing"
)

func TestDNSUpstreams(t *testing.T) {
	cases := []struct {
		list string
		ok   bool
	}{
		{`[]`, true},
		{`["9.9.9.9", "149.112.112.112:53", "2620:fe::fe", "[2620:fe::9]:53"]`, true},
		{`["127.0.0.1:5353"]`, true},
		{`["dns.quad9.net"]`, false},
		{`["9.9.9.9:0"]`, false},
		{`["0.0.0.0"]`, false},
		{`["224.0.0.251"]`, false},
		{`["1.1.1.1", "1.0.0.1", "9.9.9.9", "8.8.8.8", "8.8.4.4"]`, false},
	}
	for _, c := range cases {
		cfg, err := Parse("t", []byte("[network]\ndns_upstreams = "+c.list+"\n"))
		if (err == nil) != c.ok {
			t.Errorf("dns_upstreams = %s: err %v, want ok=%v", c.list, err, c.ok)
			continue
		}
		if err == nil && len(cfg.Network.DNSUpstreams) != strings.Count(c.list, `"`)/2 {
			t.Errorf("dns_upstreams = %s: parsed %q", c.list, cfg.Network.DNSUpstreams)
		}
	}
}
