// Command firecracker is a test double of Firecracker v1.16.1 for banger's
// tests, on hosts where real Firecracker cannot run. It serves the HTTP API
// on --api-sock and validates every request against the v1.16.1 contract
// (strict bodies, value ranges, pre-/post-boot phases), opens every
// configured file and device as the jailed uid at the same moment real
// Firecracker does, and emulates the hybrid vsock socket for the guest
// agent's port.
//
// It is meant to run under the fake jailer (test/fakes/jailer), which
// leaves it a channel on fd 3 to a sidecar outside the jail: on
// InstanceStart the fake hands the sidecar its open files and the sidecar
// boots the guest under QEMU (TCG). The guest thus gets virtio-serial for
// the agent instead of vsock, and a guest reboot ends the process with
// status 0 while a guest power-off leaves it running, as with Firecracker.
//
// Never install it as a real VMM: it is only for tests.
package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"banger/test/fakes/internal/fakeargs"
	"banger/test/fakes/internal/sidecarproto"
)

const fcVersion = "1.16.1"

// Exit codes of Firecracker (FcExitCode).
const (
	exitOK         = 0
	exitGeneric    = 1
	exitArgParsing = 153
	exitSIGHUP     = 156
)

var argSpec = fakeargs.Spec{
	Bools: []string{"no-seccomp", "boot-timer", "show-level", "show-log-origin", "version", "help", "enable-pci"},
	Values: []string{
		"api-sock", "id", "start-time-us", "start-time-cpu-us", "parent-cpu-time-us", "seccomp-filter",
		"level", "log-path", "module", "metrics-path", "http-api-max-payload-size", "mmds-size-limit",
	},
}

func main() {
	// Rust ignores SIGPIPE; stdout may be a socket whose reader has gone.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	p, err := fakeargs.Parse(argSpec, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Arguments parsing error: %v\n\nFor more information try --help.\n", err)
		return exitArgParsing
	}
	if p.Bools["version"] {
		fmt.Println("Firecracker v" + fcVersion)
		return exitOK
	}
	if p.Bools["help"] {
		fmt.Println("fake firecracker v" + fcVersion + " (test double): see test/fakes/firecracker")
		return exitOK
	}
	m, code, err := configure(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return code
	}
	return serve(m, p)
}

// configure applies the command line.
func configure(p *fakeargs.Parsed) (*machine, int, error) {
	id := "anonymous-instance"
	if v, ok := p.Values["id"]; ok {
		if !validInstanceID(v) {
			return nil, exitArgParsing, fmt.Errorf("invalid instance ID %q: it must be 1 to 64 characters of [A-Za-z0-9-]", v)
		}
		id = v
	}
	for _, n := range []string{"start-time-us", "start-time-cpu-us", "parent-cpu-time-us", "http-api-max-payload-size", "mmds-size-limit"} {
		if v, ok := p.Values[n]; ok {
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return nil, exitArgParsing, fmt.Errorf("invalid value %q for --%s: %w", v, n, err)
			}
		}
	}
	if p.Bools["no-seccomp"] && p.Has("seccomp-filter") {
		return nil, exitArgParsing, errors.New("--no-seccomp and --seccomp-filter cannot be used together")
	}
	if path, ok := p.Values["seccomp-filter"]; ok {
		// The filter file is read at start-up, inside the jail; its content
		// is not interpreted.
		if _, err := os.ReadFile(path); err != nil {
			return nil, exitGeneric, fmt.Errorf("seccomp filter: cannot read %s: %s", path, osError(err))
		}
	}
	m := newMachine(id)
	m.enablePCI = p.Bools["enable-pci"]
	if v, ok := p.Values["http-api-max-payload-size"]; ok {
		n, _ := strconv.Atoi(v)
		m.maxPayload = n
	}
	lvl := levelInfo
	if v, ok := p.Values["level"]; ok {
		var good bool
		if lvl, good = parseLevel(v); !good {
			return nil, exitArgParsing, fmt.Errorf("invalid --level %q", v)
		}
	}
	w := m.log.w
	if path, ok := p.Values["log-path"]; ok {
		f, err := openSink(path)
		if err != nil {
			return nil, exitGeneric, fmt.Errorf("logger: failed to open target file %s: %s", path, osError(err))
		}
		w = f
		m.loggerSet = true
	}
	m.log.configure(w, lvl, p.Bools["show-level"], p.Bools["show-log-origin"])
	if path, ok := p.Values["metrics-path"]; ok {
		f, err := openSink(path)
		if err != nil {
			return nil, exitGeneric, fmt.Errorf("metrics: failed to open %s: %s", path, osError(err))
		}
		m.metrics = newMetricsSink(f, m)
	}
	return m, exitOK, nil
}

func validInstanceID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if c != '-' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// serve runs the API until the guest reboots (exit 0), the sidecar fails
// or the process is killed.
func serve(m *machine, p *fakeargs.Parsed) int {
	m.log.infof("Running Firecracker v%s", fcVersion)
	sc, err := openSidecar()
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: fake firecracker: %v\n", err)
		return exitGeneric
	}
	if sc != nil {
		m.backend = sc
	}

	sock := "/run/firecracker.socket"
	if v, ok := p.Values["api-sock"]; ok {
		sock = v
	}
	// Firecracker never removes a stale socket: the caller must.
	if _, err := os.Lstat(sock); err == nil {
		fmt.Fprintf(os.Stderr, "Error: Failed to open the API socket at: %s. Check that it is not already used.\n", sock)
		return exitGeneric
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: Failed to open the API socket at: %s: %s.\n", sock, osError(err))
		return exitGeneric
	}
	ln.SetUnlinkOnClose(false)
	m.log.infof("Listening on API socket (%q).", sock)
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go apiThread(m, srv, ln, !p.Bools["no-seccomp"], served)

	// Firecracker's SIGHUP handler flushes the metrics and exits with its
	// own code; SIGTERM and SIGINT keep their default action.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	var exited, gone <-chan struct{}
	if sc != nil {
		exited, gone = sc.exited, sc.gone
	}
	for {
		select {
		case <-hup:
			m.log.errorf("Shutting down VM after intercepting signal SIGHUP.")
			m.flushMetricsAtExit()
			return exitSIGHUP
		case err := <-served:
			fmt.Fprintf(os.Stderr, "Error: API server: %v\n", err)
			return exitGeneric
		case <-exited:
			if code, exit := m.vmGone(sc); exit {
				return code
			}
			exited, gone = nil, nil // the guest is halted; serve on
		case <-gone:
			select {
			case <-exited: // the sidecar reported the VM's end before leaving
				if code, exit := m.vmGone(sc); exit {
					return code
				}
				exited, gone = nil, nil
				continue
			default:
			}
			fmt.Fprintln(os.Stderr, "Error: fake firecracker: the VMM sidecar went away")
			return exitGeneric
		}
	}
}

// apiThread is the API thread: it accepts on ln from one OS thread named
// like Firecracker's, which first installs its seccomp filter unless
// seccomp is off. Failing to install it aborts the process, as the panic of
// Firecracker's API thread does. The thread stays locked for good, so the
// filter never spreads to goroutines the runtime schedules elsewhere.
func apiThread(m *machine, srv *http.Server, ln net.Listener, filter bool, served chan<- error) {
	runtime.LockOSThread()
	setThreadName(apiThreadName)
	if filter {
		if err := installFilter(allowAll); err != nil {
			m.log.errorf("Firecracker panicked on the API thread: Failed to set the requested seccomp filters on the API thread: %v", err)
			m.flushMetricsAtExit() // Firecracker's panic hook writes the metrics too
			abort()
		}
	}
	served <- srv.Serve(ln)
}

// vmGone handles the sidecar's report that QEMU ended, and says whether
// firecracker exits and with which code.
func (m *machine) vmGone(sc *sidecar) (int, bool) {
	switch sc.reason {
	case sidecarproto.ReasonGuestShutdown:
		// Firecracker has no power management: after a guest power-off
		// the process lives on with a halted guest until it is killed.
		m.log.infof("The guest powered off; the VMM keeps running.")
		m.setHalted()
		return 0, false
	case sidecarproto.ReasonGuestReset:
		m.log.infof("Vmm is stopping.")
		m.flushMetricsAtExit()
		// Let the sidecar finish its cleanup so that nothing of this VM
		// outlives the process.
		select {
		case <-sc.gone:
		case <-time.After(5 * time.Second):
		}
		return exitOK, true
	default:
		fmt.Fprintf(os.Stderr, "Error: fake firecracker: the emulated VMM failed: %s\n", sc.reason)
		m.flushMetricsAtExit()
		return exitGeneric, true
	}
}

func (m *machine) flushMetricsAtExit() {
	m.mu.Lock()
	s := m.metrics
	m.mu.Unlock()
	if s != nil {
		_ = s.flush()
	}
}
