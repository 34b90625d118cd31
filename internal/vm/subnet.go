package vm

import (
	"fmt"
	"net/netip"
)

// PinnedSubnet picks the bridge subnet bangerd uses: the one root pinned
// at install (the helper's ping), since the helper refuses any other; the
// owner's network.subnet only when the helper reports none (an older
// helper). note says why the configured one is not used, "" when it is.
func PinnedSubnet(configured, pinned string) (use, note string) {
	if pinned == "" {
		return configured, ""
	}
	c, err := netip.ParsePrefix(configured)
	if err == nil && c.Masked().String() == pinned {
		return pinned, ""
	}
	return pinned, fmt.Sprintf("network.subnet %s in the config is not the bridge subnet root pinned at install (%s): using %s; change the pin with 'sudo banger system install --subnet' (or system run --subnet), or drop network.subnet",
		configured, pinned, pinned)
}
