// Package agenttest holds test doubles for the guest agent's side of a
// session, for the tests of the host packages that talk to it. Tests only.
package agenttest

import (
	"fmt"
	"io"
	"net"

	"github.com/hashicorp/yamux"

	"banger/internal/agentproto"
)

// OlderAgent serves the guest end c as an agent built before any op:
// every request is answered "unknown op", the way a real agent answers an
// op newer than itself. It returns when the session ends.
func OlderAgent(c net.Conn) {
	br, err := agentproto.GuestHandshake(c)
	if err != nil {
		return
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Server(struct {
		io.Reader
		io.WriteCloser
	}{br, c}, cfg)
	if err != nil {
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		var req agentproto.Request
		_ = agentproto.ReadJSONLine(st, &req)
		_ = agentproto.WriteJSONLine(st, agentproto.Reply{Error: fmt.Sprintf("unknown op %q", req.Op)})
		st.Close()
	}
}
