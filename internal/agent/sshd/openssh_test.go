package sshd

import (
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/agent/reaper"
	"banger/internal/testutil"
)

func writeKey(t testing.TB, path string, priv ed25519.PrivateKey) {
	t.Helper()
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
}

// openssh drives the system OpenSSH client tools against a test server.
type openssh struct {
	env  *testEnv
	dir  string
	port string
	opts []string
}

func newOpenSSH(t *testing.T) *openssh {
	t.Helper()
	for _, tool := range []string{"ssh", "scp", "sftp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("OpenSSH client tool %s not installed", tool)
		}
	}
	e := startServer(t, nil)
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(e.addr)
	key := filepath.Join(dir, "id_ed25519")
	writeKey(t, key, e.clientKey)
	kh := filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%s %s", port, ssh.MarshalAuthorizedKey(e.hostKey.PublicKey()))
	if err := os.WriteFile(kh, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return &openssh{env: e, dir: dir, port: port, opts: []string{
		"-F", "/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + kh,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "ConnectTimeout=5",
		"-i", key,
	}}
}

func (o *openssh) run(t *testing.T, tool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Dir = o.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (o *openssh) sshArgs(extra ...string) []string {
	args := append([]string{}, o.opts...)
	args = append(args, "-p", o.port)
	return append(args, extra...)
}

func (o *openssh) scpArgs(extra ...string) []string {
	args := append([]string{}, o.opts...)
	args = append(args, "-P", o.port)
	return append(args, extra...)
}

func TestOpenSSHClient(t *testing.T) {
	o := newOpenSSH(t)

	t.Run("ssh", func(t *testing.T) {
		o.run(t, "ssh", o.sshArgs("root@127.0.0.1", "true")...)
		out := o.run(t, "ssh", o.sshArgs("-T", "whoever@127.0.0.1", "echo hi; exit 0")...)
		if out != "hi\n" {
			t.Errorf("got %q", out)
		}
		cmd := exec.Command("ssh", o.sshArgs("root@127.0.0.1", "exit 5")...)
		err := cmd.Run()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 5 {
			t.Errorf("exit code: %v", err)
		}
	})

	t.Run("ssh-tty", func(t *testing.T) {
		out := o.run(t, "ssh", o.sshArgs("-tt", "root@127.0.0.1", "tty")...)
		if !strings.HasPrefix(out, "/dev/pts/") {
			t.Errorf("got %q", out)
		}
		// An interactive login shell fed through the pty.
		cmd := exec.Command("ssh", o.sshArgs("-tt", "root@127.0.0.1")...)
		cmd.Stdin = strings.NewReader("echo shell=$0 size=$(stty size)\nexit 4\n")
		b, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 4 {
			t.Fatalf("interactive shell: %v\n%s", err, b)
		}
		if !strings.Contains(string(b), "shell=-"+filepath.Base(defaultShell())+" size=24 80") {
			t.Errorf("interactive output %q", b)
		}
	})

	guest := t.TempDir()
	local := filepath.Join(o.dir, "local.txt")
	payload := strings.Repeat("scp round trip\n", 5000)
	if err := os.WriteFile(local, []byte(payload), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, mode := range []struct{ name, flag string }{{"scp-sftp", "-s"}, {"scp-legacy", "-O"}} {
		t.Run(mode.name, func(t *testing.T) {
			if mode.flag == "-O" {
				if _, err := exec.LookPath("scp"); err != nil {
					t.Skip("legacy scp needs scp on the server side")
				}
			}
			remote := filepath.Join(guest, mode.name+".txt")
			o.run(t, "scp", o.scpArgs(mode.flag, local, "root@127.0.0.1:"+remote)...)
			got, err := os.ReadFile(remote)
			if err != nil || string(got) != payload {
				t.Fatalf("upload: %v", err)
			}
			back := filepath.Join(o.dir, mode.name+".back")
			o.run(t, "scp", o.scpArgs(mode.flag, "root@127.0.0.1:"+remote, back)...)
			got, err = os.ReadFile(back)
			if err != nil || string(got) != payload {
				t.Fatalf("download: %v", err)
			}
		})
	}

	t.Run("sftp", func(t *testing.T) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "listed-file"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		batch := filepath.Join(o.dir, "batch")
		if err := os.WriteFile(batch, []byte("ls -1 "+d+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{}, o.opts...)
		args = append(args, "-P", o.port, "-b", batch, "root@127.0.0.1")
		out := o.run(t, "sftp", args...)
		if !strings.Contains(out, "listed-file") {
			t.Errorf("listing lacks the file:\n%s", out)
		}
	})

	t.Run("ssh-L", func(t *testing.T) {
		echo := startEcho(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lport := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		cmd := exec.Command("ssh", o.sshArgs("-N", "-o", "ExitOnForwardFailure=yes",
			"-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, echo), "root@127.0.0.1")...)
		var stderr testutil.SyncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}()
		var conn net.Conn
		deadline := time.Now().Add(10 * time.Second)
		for {
			conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", lport))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("forward never came up: %v\n%s", err, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "forwarded"); err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "forwarded" {
			t.Errorf("got %q %v", got, err)
		}
	})
}

// reaperHelperEnv makes the test binary run reaperHelper instead of the
// tests: a reaper calls wait4(-1) for the whole process, which would steal
// the exits of every other test's children.
const reaperHelperEnv = "BANGER_SSHD_REAPER_HELPER"

func TestReaperStarter(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), reaperHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
}

// reaperHelper runs exec sessions with children started through a reaper
// and checks their exit status and signal.
func reaperHelper() int {
	_, host, _ := ed25519.GenerateKey(nil)
	_, client, _ := ed25519.GenerateKey(nil)
	hs, _ := ssh.NewSignerFromKey(host)
	cs, _ := ssh.NewSignerFromKey(client)
	srv, err := New(Config{
		HostKeys:       []ssh.Signer{hs},
		AuthorizedKeys: func() ([]ssh.PublicKey, error) { return []ssh.PublicKey{cs.PublicKey()}, nil },
		Starter:        ReaperStarter(reaper.Default()),
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer srv.Close()
	a, b, err := loopbackPair()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	go srv.ServeConn(a)
	sc, chans, reqs, err := ssh.NewClientConn(b, "pair", &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)},
		HostKeyCallback: ssh.FixedHostKey(hs.PublicKey()),
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	c := ssh.NewClient(sc, chans, reqs)
	defer c.Close()
	for cmd, want := range map[string]string{
		"echo x; exit 9":  "Process exited with status 9",
		"kill -TERM $$":   `from signal "TERM"`,
		"echo ok; exit 0": "",
	} {
		s, err := c.NewSession()
		if err != nil {
			fmt.Println(err)
			return 1
		}
		err = s.Run(cmd)
		_ = s.Close()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, want) || (want == "" && got != "") {
			fmt.Printf("%q: got %q, want %q\n", cmd, got, want)
			return 1
		}
	}
	return 0
}
