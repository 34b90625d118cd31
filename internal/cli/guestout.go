package cli

import (
	"bytes"
	"fmt"
)

// guestOutput collects a guest command's output that the CLI only quotes in
// a message (a refusal's commit, an error's stderr). The guest decides how
// much it writes, so only the first max bytes are kept and the rest counted.
type guestOutput struct {
	max     int
	buf     bytes.Buffer
	dropped int64
}

func newGuestOutput(limit int) *guestOutput { return &guestOutput{max: limit} }

// Write keeps what fits and drops the rest; it never fails, so the exec
// stream it is fed from is always drained.
func (g *guestOutput) Write(p []byte) (int, error) {
	keep := min(len(p), g.max-g.buf.Len())
	g.buf.Write(p[:keep])
	g.dropped += int64(len(p) - keep)
	return len(p), nil
}

// String is the kept output, with a note of how much was dropped.
func (g *guestOutput) String() string {
	if g.dropped == 0 {
		return g.buf.String()
	}
	return fmt.Sprintf("%s ... (%d more bytes)", g.buf.String(), g.dropped)
}
