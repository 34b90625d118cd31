package helper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/privop"
	"banger/internal/privop/client"
	"banger/internal/testutil"
)

// The test binary re-runs itself as another uid to play a peer: childEnv
// selects the part it plays, sockEnv names the socket.
const (
	childEnv = "BANGER_HELPER_TEST_CHILD"
	sockEnv  = "BANGER_HELPER_TEST_SOCK"
)

// runChild is the child side. "ping" dials the helper and prints the
// outcome; "serve" squats a socket as a non-root helper and prints how many
// bytes the client sent.
func runChild(mode string) int {
	sock := os.Getenv(sockEnv)
	switch mode {
	case "ping":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := client.New(sock).Ping(ctx)
		var e *privop.Error
		switch {
		case err == nil:
			fmt.Printf("ok peer_uid=%d\n", r.PeerUID)
		case errors.As(err, &e):
			fmt.Printf("refused %s: %s\n", e.Code, e.Message)
		case errors.Is(err, syscall.EACCES):
			fmt.Println("connect: permission denied")
		default:
			fmt.Printf("error: %v\n", err)
		}
		return 0
	case "serve":
		ln, err := Listen(sock, -1)
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		defer ln.Close()
		fmt.Println("ready")
		conn, err := ln.AcceptUnix()
		if err != nil {
			fmt.Println("accept:", err)
			return 1
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.Copy(io.Discard, conn)
		conn.Close()
		fmt.Printf("received %d bytes\n", n)
		return 0
	}
	if mode == "dmhelper" {
		return runDMHelper()
	}
	fmt.Println("unknown child mode", mode)
	return 2
}

// childBinary copies the test binary where any uid can run it.
func childBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func childCmd(bin, mode, sock string, uid, gid uint32) *exec.Cmd {
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{childEnv + "=" + mode, sockEnv + "=" + sock, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	cmd.Dir = "/"
	return cmd
}

// pingAs runs the "ping" child as uid:gid and returns its one line.
func pingAs(t *testing.T, bin, sock string, uid, gid uint32) string {
	t.Helper()
	out, err := childCmd(bin, "ping", sock, uid, gid).CombinedOutput()
	if err != nil {
		t.Fatalf("child as uid %d: %v\n%s", uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestPeerCredentials is the peer-credential matrix, run as root: the
// owner and root are served; another uid is refused by the socket's mode
// and, with the mode opened up, by SO_PEERCRED, and no op runs.
func TestPeerCredentials(t *testing.T) {
	testutil.RequireRoot(t)
	const owner, other = 4242, 4343
	h := startServer(t, func(c *Config) { c.OwnerUID = owner; c.OwnerGID = owner })
	// The server's directory and socket must be reachable: the harness
	// made the socket group os.Getgid(); give it the owner's group.
	if err := os.Lchown(h.sock, -1, owner); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(h.sock)), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := childBinary(t)

	if got := pingAs(t, bin, h.sock, owner, owner); got != fmt.Sprintf("ok peer_uid=%d", owner) {
		t.Errorf("owner: %q, want served", got)
	}
	if _, err := h.client.Ping(ctxT(t)); err != nil {
		t.Errorf("root: %v, want served", err)
	}
	if got := pingAs(t, bin, h.sock, other, other); got != "connect: permission denied" {
		t.Errorf("other uid, socket 0660: %q, want the socket mode to refuse it", got)
	}
	// Even with the file mode wide open, the kernel credentials refuse it.
	if err := os.Chmod(h.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	got := pingAs(t, bin, h.sock, other, other)
	if !strings.HasPrefix(got, "refused forbidden: uid 4343 may not use the banger helper") {
		t.Errorf("other uid, socket 0666: %q, want forbidden", got)
	}
	// The owner's group alone does not help another uid.
	if got := pingAs(t, bin, h.sock, other, owner); !strings.HasPrefix(got, "refused forbidden") {
		t.Errorf("other uid in owner's group: %q, want forbidden", got)
	}
	// Only the root and owner pings ran, and they change nothing.
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("ops reached the host: %v", calls)
	}
}

// TestClientRefusesSquattedSocket: a socket served by a non-root process
// is refused before any byte of the request is sent.
func TestClientRefusesSquattedSocket(t *testing.T) {
	testutil.RequireRoot(t)
	const squatter = 65534
	bin := childBinary(t)
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(dir, "run")
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(runDir, squatter, squatter); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(runDir, "helper.sock")
	cmd := childCmd(bin, "serve", sock, squatter, squatter)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("squatter did not start: %q", lines.Text())
	}
	_, err = client.New(sock).Ping(ctxT(t))
	if !errors.Is(err, client.ErrNotRoot) {
		t.Fatalf("Ping to a squatted socket = %v, want ErrNotRoot", err)
	}
	if !strings.Contains(err.Error(), "served by uid 65534") {
		t.Errorf("error %q does not name the squatter's uid", err)
	}
	if !lines.Scan() || lines.Text() != "received 0 bytes" {
		t.Errorf("squatter: %q, want it to have received nothing", lines.Text())
	}
}
