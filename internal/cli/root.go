// Package cli is the banger command line: one file per noun, each verb a
// thin layer of flags -> client call -> printing. It talks only to bangerd
// through the API client and never imports daemon-side packages.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/api/client"
	"banger/internal/errdefs"
	"banger/internal/installmeta"
	"banger/internal/paths"
	"banger/internal/sysrun"
	"banger/internal/textsafe"
	"banger/internal/version"
)

// exitError carries a process exit status (e.g. a guest command's).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// env is what every command needs.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	layout         paths.Layout
	cl             *client.Client
	versionChecked bool
}

func (e *env) client(ctx context.Context) (*client.Client, error) {
	p, err := e.cl.Ensure(ctx)
	if err != nil {
		return nil, err
	}
	e.warnVersion(p)
	return e.cl, nil
}

// call performs one JSON request against bangerd, starting it if needed.
func (e *env) call(ctx context.Context, method, path string, body, out any) error {
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	return cl.Do(ctx, method, path, body, out)
}

// isTTY reports whether f is a terminal.
func isTTY(f any) bool {
	if ff, ok := f.(*os.File); ok {
		return term.IsTerminal(int(ff.Fd()))
	}
	return false
}

// progress prints daemon progress lines to stderr on a terminal only, so
// scripted output stays clean.
// Lines starting with "note: " are shown everywhere: they tell the user
// about a choice banger made for them (such as a fallback image).
func (e *env) progress() func(string) {
	tty := isTTY(e.stderr)
	return func(s string) {
		s = textsafe.Line(s)
		switch {
		case strings.HasPrefix(s, "note: "):
			fmt.Fprintln(e.stderr, "banger: "+s)
		case tty:
			fmt.Fprintln(e.stderr, dim("· "+s))
		}
	}
}

func dim(s string) string {
	if os.Getenv("NO_COLOR") != "" || !isTTY(os.Stderr) {
		return s
	}
	return "\x1b[2m" + s + "\x1b[0m"
}

// printJSON prints v indented. Strings in it may be a guest's (process
// names, errors): encoding/json escapes C0 controls but not DEL, C1 controls
// or bidi controls, which textsafe.JSON escapes without changing the value.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = w.Write(append(textsafe.JSON(b), '\n'))
	return err
}

// Main runs the CLI and returns the process exit status.
func Main(args []string) int {
	layout, err := paths.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "banger:", err)
		return 1
	}
	bangerd := os.Getenv("BANGER_DAEMON")
	if bangerd == "" {
		if exe, err := os.Executable(); err == nil {
			bangerd = filepath.Join(filepath.Dir(exe), "bangerd")
		}
	}
	m, metaErr := installmeta.Read(installmeta.DefaultPath)
	target := chooseDaemon(m, metaErr, os.Getuid(), layout, bangerd, installmeta.DefaultPath, sysrun.RuntimeDirFor(uint32(os.Getuid())))
	layout, bangerd = target.layout, target.bangerd
	e := &env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, layout: layout,
		cl: client.New(layout.SocketPath, bangerd, filepath.Join(layout.StateDir, "bangerd.stderr.log")),
	}
	e.cl.Hint = target.hint
	root := newRoot(e)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err = root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(os.Stderr, formatError(err))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError marks command-line mistakes.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func formatError(err error) string {
	code := errdefs.Code(err)
	var ue usageError
	if errors.As(err, &ue) {
		code = errdefs.CodeBadRequest
	}
	// Error text may carry a guest's words (its errors, its stderr): one
	// printable line, whatever they hold.
	msg := textsafe.Line(strings.ReplaceAll(err.Error(), "\n", " "))
	if code == errdefs.CodeInternal {
		return "banger: error: " + msg
	}
	return "banger: " + code + ": " + msg
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "One-command development sandboxes on microVMs",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVMCommand(e), newPsCommand(e), newImageCommand(e), newKernelCommand(e),
		newDoctorCommand(e), newVersionCommand(e), newDaemonCommand(e), newSystemCommand(e, sysrun.Run), newSSHConfigCommand(e))
	return root
}

func newVersionCommand(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the banger version (and the daemon's, if it runs)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := map[string]string{"banger": version.String()}
			if p, err := e.cl.Ping(cmd.Context()); err == nil {
				out["bangerd"] = p.Version
			}
			if asJSON {
				return printJSON(e.stdout, out)
			}
			fmt.Fprintln(e.stdout, "banger", out["banger"])
			if v, ok := out["bangerd"]; ok {
				fmt.Fprintln(e.stdout, "bangerd", v)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args)}
	}
	return nil
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("%s needs at least %d argument(s)", cmd.CommandPath(), n)}
		}
		return nil
	}
}
