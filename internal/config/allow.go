package config

import (
	"fmt"

	"banger/internal/privop"
)

// checkAllow validates network.allow as the helper will: canonical IPv4
// prefixes without host bits, at most privop.MaxAllow of them, so a bad
// entry stops bangerd at start rather than at the first VM.
func checkAllow(list []string) error {
	if _, err := privop.ParseAllow(list); err != nil {
		return fmt.Errorf("network.%w", err)
	}
	return nil
}
