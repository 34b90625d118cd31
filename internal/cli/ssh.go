package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/sshconfig"
)

func newSSHConfigCommand(e *env) *cobra.Command {
	var install, uninstall bool
	c := &cobra.Command{
		Use:   "ssh-config [--install | --uninstall]",
		Short: "Print banger's generated ssh_config and how to Include it from ~/.ssh/config",
		Long: "banger keeps an ssh_config for every VM (strict host key checking against its own known_hosts).\n" +
			"--install adds a marker-fenced Include of it to ~/.ssh/config (idempotent); --uninstall removes\n" +
			"exactly that block. After --install, plain `ssh NAME.vm` works. bangerd never edits ~/.ssh/config.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if install && uninstall {
				return usageError{errors.New("--install and --uninstall cannot be combined")}
			}
			generated := e.layout.SSHConfig
			if !install && !uninstall {
				fmt.Fprintln(e.stdout, generated)
				fmt.Fprintln(e.stdout, sshconfig.IncludeLine(generated))
				return nil
			}
			home, err := os.UserHomeDir()
			if err != nil {
				return err
			}
			path := filepath.Join(home, ".ssh", "config")
			old, err := os.ReadFile(path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("read %s: %w", path, err)
			}
			mode := os.FileMode(0o600)
			if st, err := os.Stat(path); err == nil {
				mode = st.Mode().Perm()
			}
			var out string
			var changed bool
			if install {
				out, changed = sshconfig.Install(string(old), generated)
			} else {
				out, changed = sshconfig.Uninstall(string(old))
			}
			if !changed {
				fmt.Fprintf(e.stderr, "%s: nothing to change\n", path)
				return nil
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			tmp := path + ".banger-tmp"
			if err := os.WriteFile(tmp, []byte(out), mode); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if err := os.Rename(tmp, path); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			fmt.Fprintf(e.stderr, "%s: updated\n", path)
			return nil
		},
	}
	c.Flags().BoolVar(&install, "install", false, "add the Include block to ~/.ssh/config")
	c.Flags().BoolVar(&uninstall, "uninstall", false, "remove the Include block from ~/.ssh/config")
	return c
}

// vmName strips the .vm suffix ssh passes as %n.
func vmName(host string) string { return strings.TrimSuffix(host, ".vm") }

func newVMSSHProxyCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:    "ssh-proxy NAME",
		Short:  "Carry stdin/stdout to the guest's SSH port (ssh ProxyCommand)",
		Hidden: true,
		Args:   exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := e.client(cmd.Context())
			if err != nil {
				return err
			}
			conn, br, err := cl.Connect(cmd.Context(), vmName(args[0]), "127.0.0.1:22")
			if err != nil {
				return err
			}
			defer conn.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(e.stdout, br)
				close(done)
			}()
			_, _ = io.Copy(conn, e.stdin)
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			<-done
			return nil
		},
	}
}

func newVMSSHCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:               "ssh NAME [-- CMD ARGS...]",
		Short:             "SSH into a VM with the system ssh, host key verified from the first connection",
		Args:              minArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := vmName(args[0])
			var v api.VM
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/vms/"+url.PathEscape(name), nil, &v); err != nil {
				return err
			}
			if v.State != api.StateRunning {
				return fmt.Errorf("vm %q is %s, not running: start it with 'banger vm start %s'", name, v.State, name)
			}
			bin, err := exec.LookPath("ssh")
			if err != nil {
				return errors.New("ssh not found: install the OpenSSH client (openssh-client)")
			}
			argv := []string{"ssh", "-F", e.layout.SSHConfig, "-o", "StrictHostKeyChecking=yes", name + ".vm"}
			argv = append(argv, args[1:]...)
			// Replace this process: ssh owns the terminal from here on.
			return syscall.Exec(bin, argv, os.Environ())
		},
	}
}

// sshWait bounds the wait for a fresh VM's SSH server.
const sshWait = 60 * time.Second

func haveSSH() bool {
	_, err := exec.LookPath("ssh")
	return err == nil
}

// waitSSH waits until the guest's SSH server sends its banner, through the
// agent channel. On timeout the error names the VM and where to look.
func (e *env) waitSSH(ctx context.Context, name string, limit time.Duration) error {
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		if conn, br, err := cl.Connect(ctx, name, "127.0.0.1:22"); err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			// The first bytes tell an SSH server; reading up to a newline
			// would buffer whatever a guest sends without one.
			var banner [4]byte
			_, rerr := io.ReadFull(br, banner[:])
			conn.Close()
			if rerr == nil && string(banner[:]) == "SSH-" {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("vm %q: SSH did not answer within %s; the VM is kept: see 'banger vm logs %s'", name, limit, name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sshSession runs an interactive ssh to the VM and returns its exit status.
func (e *env) sshSession(ctx context.Context, name string) (int, error) {
	cmd := exec.CommandContext(ctx, "ssh", "-F", e.layout.SSHConfig, "-o", "StrictHostKeyChecking=yes", name+".vm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}
