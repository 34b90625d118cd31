package netdev

import (
	"context"
	"fmt"
	"strings"

	"banger/internal/execx"
)

// UseXtables makes h use the xtables backend with the given iptables
// variant (e.g. "iptables-legacy"), as if the nftables probe had been
// refused, and returns the programs it will run. Whichever ebtables is
// installed is used with it. It runs the tool once, to
// list, inside h's namespace.
func UseXtables(h *Host, variant string) (v4, v6 string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	only := func(name string) (string, error) {
		if strings.HasPrefix(name, "ebtables") {
			return execx.LookPath(name)
		}
		for _, v := range xtVariants {
			if v[0] == variant && (name == v[0] || name == v[1]) {
				return execx.LookPath(name)
			}
		}
		return "", fmt.Errorf("find %s: not the variant under test", name)
	}
	x, err := findXtables(context.Background(), hostRunner{h}, only)
	if err != nil {
		return "", "", err
	}
	h.xt, h.backend = x, BackendXtables
	return x.v4, x.v6, nil
}
