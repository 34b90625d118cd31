package sys

import (
	"strconv"
	"testing"
)

func TestParseNetConfig(t *testing.T) {
	for _, tc := range []struct {
		in  string
		ok  bool
		out string
	}{
		{"172.16.0.2/24,gw=172.16.0.1,dns=172.16.0.1,mtu=1400", true, "172.16.0.2/24 172.16.0.1 [172.16.0.1] 1400"},
		{"10.0.0.5/8", true, "10.0.0.5/8 invalid IP [] 0"},
		{"172.16.0.2/24,dns=1.1.1.1,dns=9.9.9.9", true, "172.16.0.2/24 invalid IP [1.1.1.1 9.9.9.9] 0"},
		{"172.16.0.2", false, ""},
		{"fd00::2/64", false, ""},
		{"172.16.0.2/24,gw=nope", false, ""},
		{"172.16.0.2/24,mtu=70000", false, ""},
		{"172.16.0.2/24,color=blue", false, ""},
	} {
		c, err := ParseNetConfig(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseNetConfig(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		dns := "["
		for i, d := range c.DNS {
			if i > 0 {
				dns += " "
			}
			dns += d.String()
		}
		dns += "]"
		got := c.Addr.String() + " " + c.Gateway.String() + " " + dns + " " + strconv.Itoa(c.MTU)
		if got != tc.out {
			t.Errorf("ParseNetConfig(%q) = %q, want %q", tc.in, got, tc.out)
		}
	}
}
