// Package benchdata makes the images banger's root-disk benchmarks time, so
// the host bench (test/bench) and the in-guest one (internal/dmsnap) measure
// the same thing.
package benchdata

import "os"

// Extent is the size of each run of data in a bench image.
const Extent = 4 << 20

// WriteImage makes a sparse file of size bytes holding data bytes in
// Extent runs spread evenly over it (the same pattern at every size), and
// syncs it, so that a timed copy does not also write the image back. An
// existing file is replaced.
func WriteImage(path string, size, data int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	runs := max(data/Extent, 1)
	stride := size / runs
	chunk := make([]byte, Extent)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for i := range runs {
		chunk[0] = byte(i)
		if _, err := f.WriteAt(chunk, i*stride); err != nil {
			return err
		}
	}
	return f.Sync()
}
