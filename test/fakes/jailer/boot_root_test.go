package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/agentclient"
	"banger/internal/agentproto"
	"banger/internal/kernel"
)

// These tests boot a real guest through the fakes (QEMU under TCG): they
// need root, BANGER_TEST_ROOT=1, BANGER_TEST_VM=1 and BANGER_E2E_KERNEL_DEB
// (a Debian kernel package, see scripts/fetch-kernel.sh).

var (
	guestOnce              sync.Once
	guestDir               string
	guestVmlinux, guestIrd string
	guestErr               error
)

// guestImages imports the kernel once and builds the agent's initramfs,
// in a directory TestMain removes.
func guestImages(t *testing.T) (vmlinux, initrd string) {
	t.Helper()
	deb := os.Getenv("BANGER_E2E_KERNEL_DEB")
	if os.Getenv("BANGER_TEST_VM") != "1" || deb == "" {
		t.Skip("needs BANGER_TEST_VM=1 and BANGER_E2E_KERNEL_DEB")
	}
	guestOnce.Do(func() {
		if guestDir, guestErr = os.MkdirTemp("", "fakes-guest-"); guestErr != nil {
			return
		}
		a, err := kernel.ImportDeb(context.Background(), deb, filepath.Join(guestDir, "kernels"), func(string) {})
		if err != nil {
			guestErr = err
			return
		}
		agent := filepath.Join(guestDir, "banger-agent")
		cmd := exec.Command("go", "build", "-o", agent, "banger/cmd/banger-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			guestErr = fmt.Errorf("build agent: %w\n%s", err, out)
			return
		}
		guestVmlinux = a.Vmlinux
		guestIrd, guestErr = kernel.BootInitrd(a, agent, guestDir)
	})
	if guestErr != nil {
		t.Fatal(guestErr)
	}
	return guestVmlinux, guestIrd
}

// stage copies a file into the chroot, owned by the jailed uid.
func stage(t *testing.T, chroot, src, name string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(chroot, name)
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if err := os.Chown(dst, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

func emptyDisk(t *testing.T, chroot, name string) {
	t.Helper()
	p := filepath.Join(chroot, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", p).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v %s", err, out)
	}
	if err := os.Chown(p, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// bootGuest starts a jail and boots the agent initramfs on an empty root.
func bootGuest(t *testing.T, id string) *jailRun {
	vmlinux, initrd := guestImages(t)
	base := jailBase(t)
	r := startJailer(t, base, id)
	r.waitSocket()
	stage(t, r.chroot, vmlinux, "vmlinux")
	stage(t, r.chroot, initrd, "initrd")
	emptyDisk(t, r.chroot, "rootfs")
	r.mustAPI("PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":256}`)
	r.mustAPI("PUT", "/boot-source", `{"kernel_image_path":"/vmlinux","initrd_path":"/initrd","boot_args":"console=ttyS0 reboot=k panic=1 banger.transport=vsock"}`)
	r.mustAPI("PUT", "/drives/rootfs", `{"drive_id":"rootfs","path_on_host":"/rootfs","is_root_device":true,"is_read_only":false}`)
	r.mustAPI("PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock"}`)
	r.mustAPI("PUT", "/actions", `{"action_type":"InstanceStart"}`)
	if n := len(processesWithArg("banger-" + id)); n != 1 {
		t.Fatalf("%d QEMU processes for %s", n, id)
	}
	return r
}

// agentSession dials the hybrid vsock socket and runs the agent handshake.
// Until the guest agent accepts, CONNECT is closed unanswered (as with
// Firecracker), so it retries like bangerd.
func agentSession(t *testing.T, r *jailRun) *agentclient.Session {
	t.Helper()
	uds := filepath.Join(r.chroot, "v.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("unix", uds)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT %d\n", agentproto.VsockPort)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "OK ") {
			c.Close()
			if ctx.Err() != nil {
				t.Fatalf("CONNECT = %q, %v\nconsole:\n%s", line, err, r.consoleText())
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		_ = c.SetDeadline(time.Time{})
		hctx, hcancel := context.WithTimeout(ctx, 15*time.Second)
		s, err := agentclient.Handshake(hctx, c)
		hcancel()
		if err == nil {
			t.Cleanup(func() { s.Close() })
			return s
		}
		c.Close()
		if ctx.Err() != nil {
			t.Fatalf("agent handshake: %v\nconsole:\n%s", err, r.consoleText())
		}
	}
}

func TestBootRebootExits(t *testing.T) {
	requireRoot(t)
	id := fmt.Sprintf("fakeboot-r-%d", os.Getpid())
	r := bootGuest(t, id)
	s := agentSession(t, r)
	if rep, err := s.Ping(context.Background()); err != nil || rep.Mode != "pid1" {
		t.Fatalf("ping = %+v, %v", rep, err)
	}
	r.mustAPI("PATCH", "/vm", `{"state":"Paused"}`)
	if _, body := r.api("GET", "/", ""); !strings.Contains(body, `"state":"Paused"`) {
		t.Fatalf("GET / while paused = %s", body)
	}
	r.mustAPI("PATCH", "/vm", `{"state":"Resumed"}`)

	// A guest reboot ends firecracker with status 0 (reboot=k), and with it
	// the sidecar and QEMU.
	c, _, err := s.Open(context.Background(), agentproto.Request{Op: agentproto.OpShutdown, Reboot: true})
	if err == nil {
		c.Close()
	}
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("firecracker still running after a guest reboot\n%s", r.consoleText())
	}
	if r.waitErr != nil {
		t.Fatalf("firecracker exit = %v\n%s", r.waitErr, r.consoleText())
	}
	if len(sidecars(id)) != 0 || len(processesWithArg("banger-"+id)) != 0 {
		t.Fatal("sidecar or QEMU left after firecracker exited")
	}
}

func TestBootPowerOffKeepsVMM(t *testing.T) {
	requireRoot(t)
	id := fmt.Sprintf("fakeboot-p-%d", os.Getpid())
	r := bootGuest(t, id)
	s := agentSession(t, r)
	if _, err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A second host connection runs beside the first (the guest serves
	// several agent ports), and neither ends the other.
	s2 := agentSession(t, r)
	for i, sess := range []*agentclient.Session{s, s2, s} {
		if _, err := sess.Ping(context.Background()); err != nil {
			t.Fatalf("ping %d with two sessions open: %v", i+1, err)
		}
	}
	// SendCtrlAltDel reaches the guest through the i8042; the agent as
	// PID 1 powers off, and firecracker, without power management, lives on.
	r.mustAPI("PUT", "/actions", `{"action_type":"SendCtrlAltDel"}`)
	waitFor(t, "QEMU and the sidecar to exit", 60*time.Second, func() bool {
		return len(sidecars(id)) == 0 && len(processesWithArg("banger-"+id)) == 0
	})
	select {
	case <-r.done:
		t.Fatalf("firecracker exited (%v) after a guest power-off", r.waitErr)
	case <-time.After(500 * time.Millisecond):
	}
	if code, body := r.api("GET", "/", ""); code != 200 || !strings.Contains(body, `"state":"Running"`) {
		t.Fatalf("GET / after power-off = %d %s", code, body)
	}
	// Nothing answers on the agent port any more.
	c, err := net.Dial("unix", filepath.Join(r.chroot, "v.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT %d\n", agentproto.VsockPort)
	if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Fatalf("CONNECT after power-off answered %q", line)
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.done
}
