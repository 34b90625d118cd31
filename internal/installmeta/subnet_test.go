package installmeta

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/config"
)

// TestValidSubnet: root pins only a masked, private IPv4 subnet of a
// sensible size.
func TestValidSubnet(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = accepted
	}{
		{"172.16.0.0/24", ""},
		{"10.77.0.0/16", ""},
		{"192.168.200.0/29", ""},
		{"100.64.8.0/24", ""},
		{"172.16.0.1/24", "host bits set (want 172.16.0.0/24)"},
		{"192.168.1.0/30", "prefix length from 16 to 29"},
		{"10.0.0.0/8", "prefix length from 16 to 29"},
		{"8.8.8.0/24", "private range"},
		{"172.32.0.0/24", "private range"},
		{"fd00::/64", "only IPv4"},
		{"172.16.0.0", "want an IPv4 CIDR"},
		{"", "want an IPv4 CIDR"},
	} {
		p, err := ValidSubnet(tc.in)
		switch {
		case tc.want == "" && (err != nil || p != netip.MustParsePrefix(tc.in)):
			t.Errorf("ValidSubnet(%q) = %v, %v; want it accepted", tc.in, p, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ValidSubnet(%q) = %v, %v; want an error mentioning %q", tc.in, p, err, tc.want)
		}
	}
}

// TestSubnetRecorded: a pinned subnet survives a round trip, a bad one
// is refused on read, and no subnet means the owner config's default.
func TestSubnetRecorded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "install.toml")
	m := sample()
	m.Subnet = "10.99.0.0/24"
	if err := Write(p, m); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil || got.BridgeSubnet() != netip.MustParsePrefix("10.99.0.0/24") {
		t.Fatalf("read back %+v, %v", got, err)
	}
	bad := "owner_user = \"dev\"\nowner_uid = 1000\nowner_gid = 1000\nowner_home = \"/home/dev\"\nsubnet = \"192.168.1.0/30\"\n"
	if _, err := Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "192.168.1.0/30") {
		t.Errorf("Parse of a /30 subnet: %v", err)
	}
	if got := sample().BridgeSubnet().String(); got != config.DefaultSubnet {
		t.Errorf("default pinned subnet %s, but the owner config's default is %s", got, config.DefaultSubnet)
	}
}
