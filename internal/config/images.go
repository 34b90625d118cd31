package config

import (
	"fmt"

	"banger/internal/sizes"
)

// checkImages validates the image keys.
func checkImages(c Config) error {
	if c.ImageMaxUnpacked != "" {
		if _, err := sizes.Parse(c.ImageMaxUnpacked); err != nil {
			return fmt.Errorf("image_max_unpacked: %w", err)
		}
	}
	return nil
}

// MaxUnpackedBytes is image_max_unpacked in bytes: how much one tar or OCI
// import may unpack. 0 when unset, which leaves the image package's default.
func (c Config) MaxUnpackedBytes() int64 {
	n, err := sizes.Parse(c.ImageMaxUnpacked)
	if err != nil {
		return 0
	}
	return n
}
