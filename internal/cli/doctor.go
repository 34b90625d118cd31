package cli

import (
	"context"
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

func newDoctorCommand(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check the host and say which VMM will be used and why",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var d api.Doctor
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/doctor", nil, &d); err != nil {
				return err
			}
			if asJSON {
				return printJSON(e.stdout, d)
			}
			fmt.Fprintf(e.stdout, "VMM: %s (%s): %s\n\n", d.VMM, d.Accel, d.VMMReason)
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			failed := 0
			for _, c := range d.Checks {
				if c.Status == "fail" {
					failed++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", mark(c.Status), c.Name, c.Detail)
			}
			_ = tw.Flush()
			fmt.Fprintln(e.stdout, "\nVM defaults:")
			tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			for _, df := range d.Defaults {
				fmt.Fprintf(tw, "  %s\t%s\t(%s)\t%s\n", df.Key, df.Value, df.Source, df.Why)
			}
			_ = tw.Flush()
			if failed > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func mark(status string) string {
	switch status {
	case "ok":
		return "[ ok ]"
	case "warn":
		return "[warn]"
	default:
		return "[FAIL]"
	}
}

// Completion helpers query a running daemon only; they never start one.

func (e *env) names(ctx context.Context, path string) []string {
	var items []struct {
		Name string `json:"name"`
	}
	if err := e.cl.Do(ctx, http.MethodGet, path, nil, &items); err != nil {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Name)
	}
	return out
}

func (e *env) imageNames(ctx context.Context) []string  { return e.names(ctx, "/v1/images") }
func (e *env) kernelNames(ctx context.Context) []string { return e.names(ctx, "/v1/kernels") }

type completer = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)

func e2complete(fn func(*env, context.Context) []string) func(*env) completer {
	return func(e *env) completer {
		return func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			return fn(e, cmd.Context()), cobra.ShellCompDirectiveNoFileComp
		}
	}
}

func completeVMs(e *env) completer {
	return e2complete(func(e *env, ctx context.Context) []string { return e.names(ctx, "/v1/vms") })(e)
}

func completeImages(e *env) completer {
	return e2complete(func(e *env, ctx context.Context) []string { return e.imageNames(ctx) })(e)
}

func completeKernels(e *env) completer {
	return e2complete(func(e *env, ctx context.Context) []string { return e.kernelNames(ctx) })(e)
}
