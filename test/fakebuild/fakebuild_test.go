package fakebuild

import "testing"

func TestMiscHasKVM(t *testing.T) {
	for _, tc := range []struct {
		name, listing string
		want          bool
	}{
		{"kvm registered", "234 btrfs-control\n232 kvm\n200 tun\n", true},
		{"kvm first", "232 kvm\n", true},
		{"no kvm", "234 btrfs-control\n258 vsock\n200 tun\n237 loop-control\n", false},
		{"empty", "", false},
		{"name only contains kvm", "120 kvmfoo\n121 notkvm\n", false},
	} {
		if got := miscHasKVM(tc.listing); got != tc.want {
			t.Errorf("%s: miscHasKVM = %v, want %v", tc.name, got, tc.want)
		}
	}
}
