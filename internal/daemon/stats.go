package daemon

import "net/http"

// handleStats answers GET /v1/vms/{name}/stats: one sample of what the VM
// costs (the CLI takes two to compute a CPU rate).
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	respond(w, func() (any, error) { return s.svc.Stats(r.Context(), r.PathValue("name")) })
}
