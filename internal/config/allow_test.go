package config

import (
	"slices"
	"strings"
	"testing"
)

func TestNetworkAllow(t *testing.T) {
	many := `["` + strings.Join(slices.Repeat([]string{"10.0.0.0/8"}, 65), `", "`) + `"]`
	cases := []struct {
		list string
		ok   bool
	}{
		{`[]`, true},
		{`["10.1.2.0/24", "192.168.1.10/32", "169.254.0.0/16"]`, true},
		{`["10.1.2.3/24"]`, false}, // host bits
		{`["10.1.2.3"]`, false},    // not a prefix
		{`["fd00::/8"]`, false},
		{`["0.0.0.0/0"]`, false},
		{`["010.1.2.0/24"]`, false},
		{many, false},
	}
	for _, c := range cases {
		cfg, err := Parse("t", []byte("[network]\nallow = "+c.list+"\n"))
		if (err == nil) != c.ok {
			t.Errorf("allow = %s: err %v, want ok=%v", c.list, err, c.ok)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), "network.allow") {
			t.Errorf("allow = %s: error %q does not name the key", c.list, err)
		}
		if err == nil && len(cfg.Network.Allow) != strings.Count(c.list, `"`)/2 {
			t.Errorf("allow = %s: parsed %q", c.list, cfg.Network.Allow)
		}
	}
}
