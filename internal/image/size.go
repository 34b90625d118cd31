package image

import "banger/internal/sizes"

// ParseSize turns "8G", "512M", "100K", "2T" or plain bytes into bytes
// (binary units). Zero, negative and malformed sizes are errors. It is the
// same grammar as every other size banger takes, so it delegates to sizes.
func ParseSize(s string) (int64, error) {
	return sizes.Parse(s)
}
