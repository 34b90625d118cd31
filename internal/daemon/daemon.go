// Package daemon is bangerd's API edge: an HTTP server on the owner-only
// unix socket that authenticates peers by SO_PEERCRED, decodes requests,
// calls the vm service and maps error categories to status codes. No
// decision about VMs is made here.
package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/vm"
)

// Server serves the API.
type Server struct {
	svc     *vm.Service
	log     *slog.Logger
	version string
	http    *http.Server
	started time.Time
	managed string
	// stop is closed by POST /v1/shutdown; Run then stops serving.
	stop     chan struct{}
	stopOnce sync.Once
}

// New builds a Server for svc.
func New(svc *vm.Service, log *slog.Logger, version string) *Server {
	s := &Server{svc: svc, log: log, version: version, started: time.Now().UTC(), managed: managedBy(), stop: make(chan struct{})}
	mux := http.NewServeMux()
	s.routes(mux)
	s.http = &http.Server{Handler: s.logged(mux), ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Stopping is closed once a client asked bangerd to stop.
func (s *Server) Stopping() <-chan struct{} { return s.stop }

// managedBy says what runs this bangerd: its unit or its supervisor says
// so in its environment (not INVOCATION_ID, which every process started
// from a systemd user service inherits, terminals included).
func managedBy() string {
	switch os.Getenv(api.SupervisorEnv) {
	case api.SupervisorSystemd:
		return api.ManagedSystemd
	case api.SupervisorSystemRun:
		return api.ManagedSystemRun
	}
	return ""
}

// Serve accepts connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(&peerListener{Listener: l, log: s.log})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits (bounded by ctx) for requests to end.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// peerListener admits only connections from the owner (our uid) or root,
// checked with SO_PEERCRED: the kernel records the peer at connect(2), so it
// cannot be forged. The socket is also 0600 in a 0700 directory.
type peerListener struct {
	net.Listener
	log *slog.Logger
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && (uid == os.Getuid() || uid == 0) {
			return c, nil
		}
		l.log.Warn("refused connection", "peer_uid", uid, "err", err)
		c.Close()
	}
}

func peerUID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "dur", time.Since(start))
	})
}

func (s *Server) routes(m *http.ServeMux) {
	m.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.Ping{APIVersion: api.Version, Version: s.version, PID: os.Getpid(), StartedAt: s.started, Managed: s.managed})
	})
	m.HandleFunc("POST /v1/shutdown", func(w http.ResponseWriter, r *http.Request) {
		// A managed bangerd stopped here would not come back (systemd sees a
		// clean exit; banger system run stops the helper with it).
		switch s.managed {
		case api.ManagedSystemd:
			writeErr(w, errdefs.Conflict("bangerd runs as bangerd.service: use banger system restart, or sudo systemctl stop bangerd.service"))
			return
		case api.ManagedSystemRun:
			writeErr(w, errdefs.Conflict("bangerd is supervised by banger system run: stop that (Ctrl-C), and both stop"))
			return
		}
		s.log.Info("shutdown requested by a client; running VMs keep running")
		writeJSON(w, http.StatusAccepted, struct{}{})
		s.stopOnce.Do(func() { close(s.stop) })
	})
	m.HandleFunc("GET /v1/doctor", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.svc.Doctor(r.Context()))
	})
	m.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.List(r.Context()) })
	})
	m.HandleFunc("POST /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateVMRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(p vm.Progress) (any, error) { return s.svc.Create(r.Context(), req, p) })
	})
	m.HandleFunc("POST /v1/vms/prune", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) {
			d, err := s.svc.Prune(r.Context())
			return api.PruneResult{Deleted: d}, err
		})
	})
	m.HandleFunc("GET /v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.Get(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("DELETE /v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return struct{}{}, s.svc.Delete(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("PATCH /v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		var req api.SetVMRequest
		if !decode(w, r, &req) {
			return
		}
		respond(w, func() (any, error) { return s.svc.Set(r.Context(), r.PathValue("name"), req) })
	})
	m.HandleFunc("POST /v1/vms/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		stream(w, func(p vm.Progress) (any, error) { return s.svc.Start(r.Context(), r.PathValue("name"), p) })
	})
	m.HandleFunc("POST /v1/vms/{name}/restart", func(w http.ResponseWriter, r *http.Request) {
		stream(w, func(p vm.Progress) (any, error) { return s.svc.Restart(r.Context(), r.PathValue("name"), p) })
	})
	m.HandleFunc("POST /v1/vms/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.Stop(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("POST /v1/vms/{name}/kill", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.Kill(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("GET /v1/vms/{name}/logs", s.handleLogs)
	m.HandleFunc("POST /v1/vms/{name}/exec", s.handleExec)
	m.HandleFunc("PUT /v1/vms/{name}/workspace", func(w http.ResponseWriter, r *http.Request) {
		var req api.WorkspaceRequest
		if !decode(w, r, &req) {
			return
		}
		respond(w, func() (any, error) { return s.svc.SetWorkspace(r.Context(), r.PathValue("name"), req) })
	})
	m.HandleFunc("POST /v1/vms/{name}/connect", s.handleConnect)
	m.HandleFunc("GET /v1/vms/{name}/ports", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.Ports(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("GET /v1/vms/{name}/stats", s.handleStats)

	m.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.ListImages(r.Context()) })
	})
	m.HandleFunc("GET /v1/images/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.GetImage(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("DELETE /v1/images/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return struct{}{}, s.svc.DeleteImage(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("POST /v1/images/import", func(w http.ResponseWriter, r *http.Request) {
		var req api.ImportImageRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(p vm.Progress) (any, error) { return s.svc.ImportImage(r.Context(), req, p) })
	})
	m.HandleFunc("POST /v1/vms/{name}/commit", func(w http.ResponseWriter, r *http.Request) {
		var req api.CommitRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(p vm.Progress) (any, error) { return s.svc.CommitVM(r.Context(), r.PathValue("name"), req, p) })
	})
	m.HandleFunc("POST /v1/images/{name}/push", transferRoute(func(r *http.Request, req api.PushRequest, p vm.Progress, tr func(api.Transfer)) (any, error) {
		return s.svc.PushImage(r.Context(), r.PathValue("name"), req, p, tr)
	}))
	m.HandleFunc("POST /v1/kernels/{name}/push", transferRoute(func(r *http.Request, req api.PushRequest, p vm.Progress, tr func(api.Transfer)) (any, error) {
		return s.svc.PushKernel(r.Context(), r.PathValue("name"), req, p, tr)
	}))
	m.HandleFunc("POST /v1/kernels/pull", transferRoute(func(r *http.Request, req api.PullKernelRequest, p vm.Progress, tr func(api.Transfer)) (any, error) {
		return s.svc.PullKernel(r.Context(), req, p, tr)
	}))
	m.HandleFunc("POST /v1/images/pull", transferRoute(func(r *http.Request, req api.PullImageRequest, p vm.Progress, tr func(api.Transfer)) (any, error) {
		return s.svc.PullImage(r.Context(), req, p, tr)
	}))
	m.HandleFunc("POST /v1/images/cache/prune", func(w http.ResponseWriter, r *http.Request) {
		dry, _ := strconv.ParseBool(r.URL.Query().Get("dry_run"))
		respond(w, func() (any, error) { return s.svc.PruneImageCache(r.Context(), dry) })
	})
	m.HandleFunc("POST /v1/images/build", func(w http.ResponseWriter, r *http.Request) {
		var req api.BuildImageRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(p vm.Progress) (any, error) { return s.svc.BuildImage(r.Context(), req, p) })
	})
	m.HandleFunc("GET /v1/kernels", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.ListKernels(r.Context()) })
	})
	m.HandleFunc("GET /v1/kernels/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return s.svc.GetKernel(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("DELETE /v1/kernels/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, func() (any, error) { return struct{}{}, s.svc.RemoveKernel(r.Context(), r.PathValue("name")) })
	})
	m.HandleFunc("POST /v1/kernels/import", func(w http.ResponseWriter, r *http.Request) {
		var req api.ImportKernelRequest
		if !decode(w, r, &req) {
			return
		}
		stream(w, func(p vm.Progress) (any, error) { return s.svc.ImportKernel(r.Context(), req, p) })
	})
}

// status maps an error category to its HTTP status: the one place where
// errdefs categories become wire codes.
func status(err error) (int, api.Error) {
	code := errdefs.Code(err)
	e := api.Error{Code: code, Message: err.Error()}
	switch code {
	case errdefs.CodeNotFound:
		return http.StatusNotFound, e
	case errdefs.CodeExists, errdefs.CodeConflict:
		return http.StatusConflict, e
	case errdefs.CodeBadRequest:
		return http.StatusBadRequest, e
	case errdefs.CodeUnavailable:
		return http.StatusServiceUnavailable, e
	default:
		return http.StatusInternalServerError, e
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	code, e := status(err)
	writeJSON(w, code, api.ErrorBody{Error: e})
}

const maxBody = 1 << 20

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, errdefs.Invalid("decode request: %v", err))
		return false
	}
	return true
}

func respond(w http.ResponseWriter, fn func() (any, error)) {
	v, err := fn()
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// stream runs a long operation, sending progress lines as ndjson events
// and the result (or error) as the last line.
func stream(w http.ResponseWriter, fn func(vm.Progress) (any, error)) {
	streamTransfers(w, func(p vm.Progress, _ func(api.Transfer)) (any, error) { return fn(p) })
}

// transferRoute decodes a Req and streams fn's progress and transfers.
func transferRoute[Req any](fn func(*http.Request, Req, vm.Progress, func(api.Transfer)) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if !decode(w, r, &req) {
			return
		}
		streamTransfers(w, func(p vm.Progress, tr func(api.Transfer)) (any, error) { return fn(r, req, p, tr) })
	}
}

// streamTransfers is stream for operations that also report transfers
// (pulls).
func streamTransfers(w http.ResponseWriter, fn func(vm.Progress, func(api.Transfer)) (any, error)) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(ev api.Event) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
		if fl != nil {
			fl.Flush()
		}
	}
	v, err := fn(func(msg string) { send(api.Event{Progress: msg}) }, func(tr api.Transfer) { send(api.Event{Transfer: &tr}) })
	if err != nil {
		_, e := status(err)
		send(api.Event{Error: &e})
		return
	}
	b, _ := json.Marshal(v)
	send(api.Event{Result: b})
}

func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	path, err := s.svc.ConsolePath(r.Context(), name)
	if err != nil {
		writeErr(w, err)
		return
	}
	data, err := s.svc.ReadConsole(r.Context(), name)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	if !follow {
		return
	}
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	// Follow by polling the file: the console pump owns the writes and may
	// rotate the file under us, which shows up as a shrink.
	var off int64
	if st, err := os.Stat(path); err == nil {
		off = st.Size()
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		if st.Size() < off {
			off = 0
		}
		if st.Size() == off {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		n, _ := io.Copy(w, io.NewSectionReader(f, off, st.Size()-off))
		f.Close()
		off += n
		if fl != nil {
			fl.Flush()
		}
	}
}

// handleExec upgrades the connection to a raw exec frame stream spliced to
// the guest agent: frames pass through untouched, so the daemon never
// buffers a command's output.
func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	var req api.ExecRequest
	if !decode(w, r, &req) {
		return
	}
	st, err := s.svc.Exec(r.Context(), r.PathValue("name"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer st.Close()
	s.upgrade(w, api.ExecUpgrade, st)
}

// handleConnect upgrades the connection to a raw TCP stream to a port in
// the guest (vm forward).
func (s *Server) handleConnect(w http.ResponseWriter, r *http.Request) {
	var req api.ConnectRequest
	if !decode(w, r, &req) {
		return
	}
	st, err := s.svc.Connect(r.Context(), r.PathValue("name"), req.Addr)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer st.Close()
	s.upgrade(w, api.ConnectUpgrade, st)
}

// upgrade hijacks the connection, answers 101 and splices it to guest.
func (s *Server) upgrade(w http.ResponseWriter, proto string, guest net.Conn) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeErr(w, errors.New("connection cannot be upgraded"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", proto)
	if err := brw.Flush(); err != nil {
		return
	}
	splice(conn, brw.Reader, guest)
}

// splice copies client->guest and guest->client until the guest side ends
// (it closes its stream after the exit frame) or the client goes away.
func splice(client net.Conn, clientR *bufio.Reader, guest net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(guest, clientR)
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(client, guest)
		done <- struct{}{}
	}()
	<-done
}
