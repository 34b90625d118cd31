package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
)

// apiError is a non-2xx answer; its message becomes fault_message.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// Firecracker's phase errors (rpc_interface.rs).
var (
	errPostBoot = badRequest("The requested operation is not supported after starting the microVM.")
	errPreBoot  = badRequest("The requested operation is not supported before starting the microVM.")
)

// notEmulated refuses a valid request for a feature the fake cannot
// provide, rather than pretending the guest got it.
func notEmulated(what string) error {
	return badRequest("fake firecracker: %s is not emulated", what)
}

// deserializeError wraps a body decoding failure as Firecracker words it.
func deserializeError(err error) error {
	return badRequest("An error occurred when deserializing the json body of a request: %v.", err)
}

// decode reads a request body strictly into v.
func decode(body []byte, v any) error {
	if err := decodeStrict(body, v); err != nil {
		return deserializeError(err)
	}
	return nil
}

// ServeHTTP implements the API socket.
func (m *machine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(m.maxPayload)+1))
	if err != nil {
		writeFault(w, badRequest("read request body: %v", err))
		return
	}
	if len(body) > m.maxPayload {
		writeFault(w, badRequest("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), m.maxPayload))
		return
	}
	m.log.infof("The API server received a %s request on %q.", r.Method, r.URL.Path)
	m.countRequest(r.Method)
	out, err := m.route(r.Method, r.URL.Path, body)
	if err != nil {
		writeFault(w, err)
		return
	}
	if out == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		writeFault(w, &apiError{status: http.StatusInternalServerError, msg: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func writeFault(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusBadRequest, msg: err.Error()}
	}
	b, _ := json.Marshal(faultBody{FaultMessage: ae.msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.status)
	_, _ = w.Write(b)
}

// route dispatches one request. A nil result with a nil error is 204.
func (m *machine) route(method, path string, body []byte) (any, error) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	invalid := badRequest("Invalid request method and/or path: %s %s.", method, path)
	m.mu.Lock()
	defer m.mu.Unlock()

	switch parts[0] {
	case "":
		if len(parts) == 1 && method == http.MethodGet {
			return m.instanceInfo(), nil
		}
	case "version":
		if len(parts) == 1 && method == http.MethodGet {
			return map[string]string{"firecracker_version": fcVersion}, nil
		}
	case "machine-config":
		if len(parts) != 1 {
			break
		}
		switch method {
		case http.MethodGet:
			return m.mc, nil
		case http.MethodPut:
			return decodeThen(body, m.putMachineConfig)
		case http.MethodPatch:
			return decodeThen(body, m.patchMachineConfig)
		}
	case "vm":
		if len(parts) == 2 && parts[1] == "config" && method == http.MethodGet {
			return m.vmConfig(), nil
		}
		if len(parts) == 1 && method == http.MethodPatch {
			return decodeThen(body, m.patchVM)
		}
	case "boot-source":
		if len(parts) == 1 && method == http.MethodPut {
			return decodeThen(body, m.putBootSource)
		}
	case "drives":
		if len(parts) != 2 || (method != http.MethodPut && method != http.MethodPatch) {
			break
		}
		id, err := checkedID(parts[1])
		if err != nil {
			return nil, err
		}
		if method == http.MethodPut {
			return decodeThen(body, func(v Drive) error { return m.putDrive(id, v) })
		}
		return decodeThen(body, func(v PartialDrive) error { return m.patchDrive(id, v) })
	case "network-interfaces":
		if len(parts) != 2 || (method != http.MethodPut && method != http.MethodPatch) {
			break
		}
		id, err := checkedID(parts[1])
		if err != nil {
			return nil, err
		}
		if method == http.MethodPut {
			return decodeThen(body, func(v NetworkInterface) error { return m.putNetworkInterface(id, v) })
		}
		return decodeThen(body, func(v PartialNetworkInterface) error { return m.patchNetworkInterface(id, v) })
	case "vsock":
		if len(parts) == 1 && method == http.MethodPut {
			return decodeThen(body, m.putVsock)
		}
	case "logger":
		if len(parts) == 1 && method == http.MethodPut {
			return decodeThen(body, m.putLogger)
		}
	case "metrics":
		if len(parts) == 1 && method == http.MethodPut {
			return decodeThen(body, m.putMetrics)
		}
	case "mmds":
		if len(parts) == 2 && parts[1] == "config" && method == http.MethodPut {
			return decodeThen(body, m.putMmdsConfig)
		}
		if len(parts) == 1 {
			return m.mmdsRequest(method, body)
		}
	case "balloon":
		return m.balloonRequest(method, parts[1:], body)
	case "entropy":
		if len(parts) == 1 && method == http.MethodPut {
			var e EntropyDevice
			if err := decode(body, &e); err != nil {
				return nil, err
			}
			if m.started {
				return nil, errPostBoot
			}
			m.entropy = &e
			return nil, nil
		}
	case "serial":
		if len(parts) == 1 && method == http.MethodPut {
			return decodeThen(body, m.putSerial)
		}
	case "cpu-config":
		if len(parts) == 1 && method == http.MethodPut {
			var c CPUConfig
			if err := decode(body, &c); err != nil {
				return nil, err
			}
			if m.started {
				return nil, errPostBoot
			}
			// CPU templates shape CPUID under KVM; the emulated guest's
			// CPU is whatever TCG provides, so the template is accepted
			// and has no effect.
			return nil, nil
		}
	case "actions":
		if len(parts) == 1 && method == http.MethodPut {
			return decodeThen(body, m.action)
		}
	case "snapshot":
		if len(parts) == 2 && method == http.MethodPut {
			switch parts[1] {
			case "create":
				var s SnapshotCreateParams
				if err := decode(body, &s); err != nil {
					return nil, err
				}
				if !m.started {
					return nil, errPreBoot
				}
				return nil, notEmulated("snapshotting")
			case "load":
				var s SnapshotLoadParams
				if err := decode(body, &s); err != nil {
					return nil, err
				}
				if m.started {
					return nil, errPostBoot
				}
				return nil, notEmulated("snapshot loading")
			}
		}
	case "pmem", "hotplug":
		if method == http.MethodPut || method == http.MethodPatch {
			return nil, notEmulated("/" + parts[0])
		}
	}
	return nil, invalid
}

// checkedID validates an id taken from a URL path like Firecracker does:
// ASCII alphanumerics and underscores, at most 64 characters.
func checkedID(id string) (string, error) {
	if id == "" {
		return "", badRequest("Required key id not present in path.")
	}
	if len(id) > 64 {
		return "", badRequest("Invalid ID. The ID %q is longer than 64 characters.", id)
	}
	for _, c := range id {
		if c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return "", badRequest("Invalid ID. The ID %q contains invalid characters: only alphanumeric characters and underscores are allowed.", id)
		}
	}
	return id, nil
}

func (m *machine) instanceInfo() InstanceInfo {
	state := "Not started"
	if m.started {
		state = "Running"
		if m.paused {
			state = "Paused"
		}
	}
	return InstanceInfo{ID: m.id, State: state, VMMVersion: fcVersion, AppName: "Firecracker"}
}

func (m *machine) mmdsRequest(method string, body []byte) (any, error) {
	switch method {
	case http.MethodGet:
		if m.mmds == nil {
			return nil, &apiError{status: http.StatusNotFound, msg: "The MMDS data store is not initialized."}
		}
		return m.mmds, nil
	case http.MethodPut, http.MethodPatch:
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return nil, deserializeError(err)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, badRequest("The MMDS data store contents must be a JSON object.")
		}
		if method == http.MethodPatch {
			if m.mmds == nil {
				return nil, badRequest("The MMDS data store is not initialized.")
			}
			var cur map[string]any
			_ = json.Unmarshal(m.mmds, &cur)
			obj = mergePatch(cur, obj)
		}
		b, err := json.Marshal(obj)
		if err != nil {
			return nil, badRequest("encode MMDS: %v", err)
		}
		if len(b) > m.maxPayload {
			return nil, badRequest("The MMDS patch request doesn't fit.")
		}
		m.mmds = b
		return nil, nil
	}
	return nil, badRequest("Invalid request method and/or path: %s /mmds.", method)
}

// mergePatch applies an RFC 7396 JSON merge patch, as PATCH /mmds does.
func mergePatch(dst, patch map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			continue
		}
		if pm, ok := v.(map[string]any); ok {
			dm, _ := dst[k].(map[string]any)
			dst[k] = mergePatch(dm, pm)
			continue
		}
		dst[k] = v
	}
	return dst
}

func (m *machine) balloonRequest(method string, rest []string, body []byte) (any, error) {
	sub := strings.Join(rest, "/")
	switch {
	case sub == "" && method == http.MethodPut:
		var b Balloon
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		if m.started {
			return nil, errPostBoot
		}
		return nil, notEmulated("the balloon device")
	case sub == "" && method == http.MethodPatch:
		var b BalloonUpdate
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		if !m.started {
			return nil, errPreBoot
		}
		return nil, badRequest("The balloon device was not configured.")
	case sub == "statistics" && method == http.MethodPatch:
		var b BalloonStatsUpdate
		if err := decode(body, &b); err != nil {
			return nil, err
		}
		if !m.started {
			return nil, errPreBoot
		}
		return nil, badRequest("The balloon device was not configured.")
	case (sub == "" || sub == "statistics" || sub == "hinting/status") && method == http.MethodGet:
		return nil, badRequest("The balloon device was not configured.")
	case (sub == "hinting/start" || sub == "hinting/stop") && method == http.MethodPatch:
		return nil, badRequest("The balloon device was not configured.")
	}
	return nil, badRequest("Invalid request method and/or path: %s /balloon/%s.", method, sub)
}

// osError renders err like Rust's io::Error ("Permission denied (os error
// 13)") so that fault messages carry the errno.
func osError(err error) string {
	var n syscall.Errno
	if !errors.As(err, &n) {
		return err.Error()
	}
	s := n.Error()
	if s != "" {
		s = strings.ToUpper(s[:1]) + s[1:]
	}
	return s + " (os error " + strconv.Itoa(int(n)) + ")"
}

// decodeThen decodes body strictly into a T and hands it to fn.
func decodeThen[T any](body []byte, fn func(T) error) (any, error) {
	var v T
	if err := decode(body, &v); err != nil {
		return nil, err
	}
	return nil, fn(v)
}
