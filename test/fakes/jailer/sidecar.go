package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	agentcmdline "banger/internal/agent/cmdline"
	"banger/internal/vmm"
	"banger/internal/vmm/qemu"
	"banger/test/fakes/internal/fakeargs"
	"banger/test/fakes/internal/sidecarproto"
)

// The sidecar runs outside the jail as root. It boots the guest under QEMU
// (TCG) with the files the fake firecracker opened in the jail, serves the
// console, hands out connections to the agent's virtio-serial ports (as
// many as banger.agentports= on the guest's command line), reports the
// guest opening and closing them (QMP VSERPORT_CHANGE), and owns QEMU's
// lifetime: QEMU dies with the sidecar (PDEATHSIG) and the sidecar ends
// when firecracker's end of the channel closes.

const (
	socketWait = 15 * time.Second // QEMU creating its sockets
	qmpTimeout = 15 * time.Second
)

type sidecarServer struct {
	conn     *sidecarproto.Conn
	id       string
	uid, gid uint32

	mu sync.Mutex
	vm *qemuVM

	cleanupOnce sync.Once
}

type qemuVM struct {
	dir        string
	agentSocks []string // by agent port index
	agentHeld  []int    // O_PATH fds of agentSocks (holdAgentSocks)
	cmd        *exec.Cmd
	onPort     func(port int, open bool)
	exited     chan struct{} // closed once QEMU has been waited for
	waitErr    error

	ready   chan struct{} // closed once the console and QMP are connected, or setup failed
	qmp     *qmpClient    // set before ready is closed, nil if setup failed
	initErr error         // set before ready is closed
}

// whenReady waits for QEMU's setup to finish.
func (vm *qemuVM) whenReady() error {
	select {
	case <-vm.ready:
		return vm.initErr
	case <-time.After(socketWait + qmpTimeout):
		return errors.New("QEMU is still starting")
	}
}

func runSidecar(args []string) int {
	// The console copy writes to the caller's console file, which may be a
	// pipe or socket whose reader is gone.
	signal.Ignore(syscall.SIGPIPE)
	p, err := fakeargs.Parse(fakeargs.Spec{Values: []string{"id", "uid", "gid"}}, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake jailer sidecar: %v\n", err)
		return 1
	}
	uid, err1 := strconv.ParseUint(p.Values["uid"], 10, 32)
	gid, err2 := strconv.ParseUint(p.Values["gid"], 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(os.Stderr, "fake jailer sidecar: %v\n", err)
		return 1
	}
	conn, err := sidecarproto.FromFile(os.NewFile(uintptr(sidecarproto.FD), "channel"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake jailer sidecar: %v\n", err)
		return 1
	}
	s := &sidecarServer{conn: conn, id: p.Values["id"], uid: uint32(uid), gid: uint32(gid)}
	if err := conn.Send(sidecarproto.Message{Op: sidecarproto.OpHello, Greeting: sidecarproto.Greeting, PID: os.Getpid()}); err != nil {
		return 1
	}
	s.serve()
	return 0
}

// serve answers requests until firecracker's end closes, then tears down.
func (s *sidecarServer) serve() {
	for {
		m, files, err := s.conn.Recv()
		if err != nil {
			s.teardown()
			return
		}
		rep := sidecarproto.Message{Op: sidecarproto.OpReply, Seq: m.Seq}
		var out []*os.File
		switch m.Op {
		case sidecarproto.OpBoot:
			err = s.boot(m.Boot, files) // takes ownership of files
			files = nil
		case sidecarproto.OpAgent:
			var f *os.File
			if f, err = s.agent(m.Port); err == nil {
				out = append(out, f)
			}
		case sidecarproto.OpCtrlAltDel:
			err = s.qmp("send-key", map[string]any{"keys": []map[string]string{
				{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"},
			}})
		case sidecarproto.OpPause:
			err = s.qmp("stop", nil)
		case sidecarproto.OpResume:
			err = s.qmp("cont", nil)
		default:
			err = fmt.Errorf("unknown request %q", m.Op)
		}
		closeAll(files)
		if err != nil {
			rep.Error = err.Error()
		}
		_ = s.conn.Send(rep, out...)
		closeAll(out)
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

func (s *sidecarServer) current() *qemuVM {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vm
}

func (s *sidecarServer) qmp(cmd string, args any) error {
	vm := s.current()
	if vm == nil {
		return errors.New("the VM is not running")
	}
	if err := vm.whenReady(); err != nil {
		return err
	}
	return vm.qmp.execute(cmd, args)
}

// agent returns a new connection to agent port. QEMU serves one client at
// a time: a connection made while firecracker still holds the previous one
// waits in the backlog until that one is closed (firecracker asks only for
// a port it does not hold).
func (s *sidecarServer) agent(port int) (*os.File, error) {
	vm := s.current()
	if vm == nil {
		return nil, errors.New("the VM is not running")
	}
	if err := vm.whenReady(); err != nil {
		return nil, err
	}
	if port < 0 || port >= len(vm.agentSocks) {
		return nil, fmt.Errorf("no agent port %d", port)
	}
	c, err := net.DialTimeout("unix", vm.agentAddr(port), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to the agent port: %w", err)
	}
	defer c.Close()
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return nil, fmt.Errorf("connect to the agent port: %w", err)
	}
	return f, nil
}

// teardown kills QEMU and removes the private directory, once.
func (s *sidecarServer) teardown() {
	s.cleanupOnce.Do(func() {
		vm := s.current()
		if vm == nil {
			return
		}
		_ = vm.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-vm.exited:
		case <-time.After(10 * time.Second):
		}
		os.RemoveAll(vm.dir)
	})
}

// fileAt returns files[i] for a protocol index, or nil for -1.
func fileAt(files []*os.File, i int, used map[int]bool) (*os.File, error) {
	if i == -1 {
		return nil, nil
	}
	if i < 0 || i >= len(files) || used[i] {
		return nil, fmt.Errorf("bad fd index %d", i)
	}
	used[i] = true
	return files[i], nil
}

func (s *sidecarServer) boot(b *sidecarproto.Boot, files []*os.File) (err error) {
	var console *os.File
	defer func() {
		// QEMU holds its own copies of everything but the console.
		for _, f := range files {
			if f != console || err != nil {
				f.Close()
			}
		}
	}()
	if b == nil {
		return errors.New("boot request without a boot description")
	}
	if s.current() != nil {
		return errors.New("the VM is already booted")
	}
	used := map[int]bool{}
	spec := vmm.Spec{ID: s.id, Name: s.id, VCPU: b.VCPU, MemoryMiB: b.MemMiB, Cmdline: b.Cmdline}
	var extra []*os.File
	procPath := func(f *os.File) string {
		extra = append(extra, f)
		// QEMU reopens the inherited descriptor through /proc: the file was
		// opened in the jail, so no path is resolved outside it.
		return "/proc/self/fd/" + strconv.Itoa(2+len(extra))
	}
	if b.Net != nil {
		tap, err := fileAt(files, b.Net.FD, used)
		if err != nil || tap == nil {
			return fmt.Errorf("net: %w", errors.Join(err, errors.New("missing tap")))
		}
		mac := b.Net.MAC
		if mac == "" {
			mac = randomMAC()
		}
		extra = append(extra, tap) // fd 3, where qemu.Args expects the tap
		spec.Net = &vmm.Net{Tap: tap, MAC: mac}
	}
	kernel, err := fileAt(files, b.KernelFD, used)
	if err != nil || kernel == nil {
		return fmt.Errorf("kernel: %w", errors.Join(err, errors.New("missing kernel")))
	}
	spec.Kernel = procPath(kernel)
	initrd, err := fileAt(files, b.InitrdFD, used)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	if initrd != nil {
		spec.Initrd = procPath(initrd)
	}
	for i, d := range b.Drives {
		f, err := fileAt(files, d.FD, used)
		if err != nil || f == nil {
			return fmt.Errorf("drive %d: %w", i, errors.Join(err, errors.New("missing file")))
		}
		spec.Drives = append(spec.Drives, vmm.Drive{ID: "drive" + strconv.Itoa(i), Path: procPath(f), ReadOnly: d.ReadOnly})
	}
	if console, err = fileAt(files, b.ConsoleFD, used); err != nil {
		return fmt.Errorf("console: %w", err)
	}

	vm, err := s.startQEMU(spec, extra, b.Entropy, console)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.vm = vm
	s.mu.Unlock()
	go s.watch(vm)
	return nil
}

func randomMAC() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return fmt.Sprintf("06:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

func qemuBinary() (string, error) {
	if p, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		return p, nil
	}
	// The jailer may run with an empty PATH (a root helper's clean
	// environment); look where distributions install QEMU.
	for _, d := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, "qemu-system-x86_64")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
}

func (s *sidecarServer) startQEMU(spec vmm.Spec, extra []*os.File, entropy bool, console *os.File) (vm *qemuVM, err error) {
	bin, err := qemuBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fakefc-")
	if err != nil {
		return nil, fmt.Errorf("create QEMU socket dir: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Chown(dir, int(s.uid), int(s.gid)); err != nil {
		return nil, fmt.Errorf("chown QEMU socket dir: %w", err)
	}
	vm = &qemuVM{dir: dir, exited: make(chan struct{}), ready: make(chan struct{}), onPort: s.sendPort}
	ports := agentcmdline.Parse(spec.Cmdline).Ports
	for i := range ports {
		vm.agentSocks = append(vm.agentSocks, filepath.Join(dir, "agent"+strconv.Itoa(i)+".sock"))
	}
	consoleSock := filepath.Join(dir, "console.sock")
	qmpSock := filepath.Join(dir, "qmp.sock")

	// QMP comes first so its socket exists before QEMU blocks waiting for
	// the console client (wait=on in qemu.Args).
	// -S: the guest waits for "cont" until QMP is negotiated, so no
	// VSERPORT_CHANGE event (sent only after negotiation) is missed.
	args := append([]string{"-S", "-qmp", "unix:" + qmpSock + ",server=on,wait=off"},
		qemu.Args(spec, "tcg", qemu.HostTSCKHz(), vm.agentSocks[0], consoleSock)...)
	args = append(args, extraPortArgs(vm.agentSocks)...)
	// The fake's guest runs under TCG, whose JIT buffer is made executable
	// with mprotect(PROT_EXEC), which MemoryDenyWriteExecute= (the helper
	// unit's, inherited by the jailer and so by this sidecar) forbids.
	// split-wx maps the buffer twice, writable and executable, with no
	// such call. Firecracker itself runs no JIT.
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-accel" && args[i+1] == "tcg" {
			args[i+1] = "tcg,split-wx=on"
		}
	}
	// An i8042 gives the guest what Firecracker emulates for reboot=k and
	// SendCtrlAltDel.
	args = append(args, "-device", "i8042")
	if entropy {
		args = append(args, "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng0")
	}
	cmd := exec.Command(bin, args...)
	ql := &qemuLog{}
	cmd.Stdout = ql
	cmd.Stderr = ql
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: s.uid, Gid: s.gid, Groups: []uint32{}},
	}
	vm.cmd = cmd

	started := make(chan error, 1)
	go func() {
		// PDEATHSIG fires when the thread that forked QEMU exits: keep
		// this goroutine's thread alive, locked, for QEMU's whole life.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		vm.waitErr = cmd.Wait()
		close(vm.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	// InstanceStart answers once QEMU runs, as Firecracker's does once
	// the vCPUs run; the go SDK allows a request only 500 ms by default.
	go vm.connect(qmpSock, consoleSock, console)
	return vm, nil
}

// connect attaches the console (which lets QEMU start the guest) and QMP.
// A failure kills QEMU; watch then reports it as a VMM failure.
func (vm *qemuVM) connect(qmpSock, consoleSock string, console *os.File) {
	defer close(vm.ready)
	fail := func(err error) {
		vm.initErr = err
		_ = vm.cmd.Process.Signal(syscall.SIGKILL)
		if console != nil {
			console.Close()
		}
	}
	qc, err := dialWhenReady(qmpSock, vm)
	if err != nil {
		fail(err)
		return
	}
	cc, err := dialWhenReady(consoleSock, vm)
	if err != nil {
		qc.Close()
		fail(err)
		return
	}
	go copyConsole(cc, console)
	console = nil // copyConsole owns it now
	q := newQMP(qc)
	q.onPort = func(id string, open bool) {
		if i, ok := portIndex(id, len(vm.agentSocks)); ok {
			vm.onPort(i, open)
		}
	}
	if err := q.handshake(qmpTimeout); err != nil {
		qc.Close()
		fail(fmt.Errorf("QMP: %w", err))
		return
	}
	// QMP answers once QEMU is set up, its agent sockets made.
	if err := vm.holdAgentSocks(); err != nil {
		qc.Close()
		fail(err)
		return
	}
	if err := q.execute("cont", nil); err != nil {
		qc.Close()
		fail(fmt.Errorf("QMP: start the guest: %w", err))
		return
	}
	vm.qmp = q
}

// qemuLog passes QEMU's own messages to the sidecar's stderr (the console
// file), prefixed, and drops its "waiting for connection" notice, which
// real Firecracker never prints there.
type qemuLog struct {
	buf []byte
}

func (q *qemuLog) Write(p []byte) (int, error) {
	q.buf = append(q.buf, p...)
	for {
		i := bytes.IndexByte(q.buf, '\n')
		if i < 0 && len(q.buf) < 4096 {
			return len(p), nil
		}
		if i < 0 {
			i = len(q.buf)
		}
		line := q.buf[:i]
		if !bytes.Contains(line, []byte("QEMU waiting for connection")) {
			fmt.Fprintf(os.Stderr, "fake firecracker: qemu: %s\n", line)
		}
		q.buf = q.buf[min(i+1, len(q.buf)):]
	}
}

// dialWhenReady connects to a socket QEMU is about to create.
func dialWhenReady(path string, vm *qemuVM) (net.Conn, error) {
	deadline := time.Now().Add(socketWait)
	for {
		if _, err := os.Stat(path); err == nil {
			c, err := net.Dial("unix", path)
			if err == nil {
				return c, nil
			}
		}
		select {
		case <-vm.exited:
			if vm.waitErr == nil {
				return nil, fmt.Errorf("QEMU exited with status 0 before creating %s", filepath.Base(path))
			}
			return nil, fmt.Errorf("QEMU exited before creating %s: %w", filepath.Base(path), vm.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("QEMU did not create %s within %s", filepath.Base(path), socketWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// copyConsole copies the serial console to out (firecracker's serial_out
// file, or the stdout given to the jailer). It keeps draining after a
// write error so that the guest never blocks on a full console.
func copyConsole(c net.Conn, out *os.File) {
	defer c.Close()
	var w io.Writer = os.Stdout
	if out != nil {
		defer out.Close()
		w = out
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && w != nil {
			if _, werr := w.Write(buf[:n]); werr != nil {
				w = nil
			}
		}
		if err != nil {
			return
		}
	}
}

// watch reports QEMU's end to firecracker and exits the sidecar.
func (s *sidecarServer) watch(vm *qemuVM) {
	<-vm.exited
	<-vm.ready // connect gives up once QEMU has exited
	reason := ""
	if vm.qmp != nil {
		reason = vm.qmp.shutdownReason(2 * time.Second)
	}
	switch reason {
	case sidecarproto.ReasonGuestReset, sidecarproto.ReasonGuestShutdown:
	case "":
		reason = fmt.Sprintf("QEMU exited without a shutdown event: %v", vm.waitErr)
		if vm.initErr != nil {
			reason = fmt.Sprintf("QEMU failed to start: %v", vm.initErr)
		}
	default:
		reason = fmt.Sprintf("QEMU shut down (%s)", reason)
	}
	s.cleanupOnce.Do(func() { os.RemoveAll(vm.dir) })
	_ = s.conn.Send(sidecarproto.Message{Op: sidecarproto.OpExit, Reason: reason})
	os.Exit(0)
}
