package vmdns

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseResolvConf(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string
	}{
		{name: "empty", text: "", want: nil},
		{name: "systemd-resolved stub kept",
			text: "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
			want: []string{"127.0.0.53:53"}},
		{name: "several, in order, with comments",
			text: "domain example.test\nnameserver 192.0.2.1 # primary\n; nameserver 192.0.2.9\nnameserver  192.0.2.2\n\tnameserver\t2001:db8::1\n",
			want: []string{"192.0.2.1:53", "192.0.2.2:53", "[2001:db8::1]:53"}},
		{name: "zone kept", text: "nameserver fe80::1%eth0\n", want: []string{"[fe80::1%eth0]:53"}},
		{name: "malformed lines skipped",
			text: "nameserver\nnameserver not-an-ip\nnameservers 192.0.2.3\nnameserver 192.0.2.4\n",
			want: []string{"192.0.2.4:53"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseResolvConf(strings.NewReader(c.text))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestNormalizeUpstream(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"192.0.2.1", "192.0.2.1:53", true},
		{"192.0.2.1:5353", "192.0.2.1:5353", true},
		{"2001:db8::1", "[2001:db8::1]:53", true},
		{"[2001:db8::1]", "[2001:db8::1]:53", true},
		{"[2001:db8::1]:54", "[2001:db8::1]:54", true},
		{"192.0.2.1:0", "", false},
		{"dns.example", "", false},
		{"", "", false},
	}
	for _, c := range cases {
		got, err := NormalizeUpstream(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("NormalizeUpstream(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestWithoutSelf(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		name      string
		upstreams []string
		self      []netip.AddrPort
		want      []string
	}{
		{name: "stub on another port kept",
			upstreams: []string{"127.0.0.53:53"}, self: []netip.AddrPort{ap("127.0.0.1:42069")},
			want: []string{"127.0.0.53:53"}},
		{name: "exactly ourselves dropped",
			upstreams: []string{"127.0.0.53:53", "192.0.2.1:53"}, self: []netip.AddrPort{ap("127.0.0.53:53")},
			want: []string{"192.0.2.1:53"}},
		{name: "wildcard listener covers loopback on that port",
			upstreams: []string{"127.0.0.1:53", "192.0.2.1:53"}, self: []netip.AddrPort{ap("0.0.0.0:53")},
			want: []string{"192.0.2.1:53"}},
		{name: "bridge listener",
			upstreams: []string{"172.16.0.1:53", "172.16.0.1:5353"}, self: []netip.AddrPort{ap("172.16.0.1:53")},
			want: []string{"172.16.0.1:5353"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := withoutSelf(c.upstreams, c.self)
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
}
