package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

func newKernelCommand(e *env) *cobra.Command {
	c := &cobra.Command{Use: "kernel", Short: "Manage guest kernels"}
	var listJSON, showJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List kernels", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ks := []api.Kernel{}
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/kernels", nil, &ks); err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, ks)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tID\tSOURCE\tCREATED")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Name, k.Version, short(k.ID), k.SourceName, ago(k.CreatedAt))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use: "show NAME", Short: "Show one kernel", Args: exactArgs(1), ValidArgsFunction: completeKernels(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k api.Kernel
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/kernels/"+url.PathEscape(args[0]), nil, &k); err != nil {
				return err
			}
			if showJSON {
				return printJSON(e.stdout, k)
			}
			fmt.Fprintf(e.stdout, "name:         %s\nversion:      %s\nid:           %s\nsource:       %s (%s)\ndir:          %s\nboot modules: %s\n",
				k.Name, k.Version, k.ID, k.SourceName, k.Source, k.Dir, strings.Join(k.BootModules, " "))
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use: "rm NAME...", Short: "Remove kernels", Args: minArgs(1), ValidArgsFunction: completeKernels(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range dedupe(args) {
				if err := e.call(cmd.Context(), http.MethodDelete, "/v1/kernels/"+url.PathEscape(n), nil, nil); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, n)
			}
			return nil
		},
	}
	var name, vmlinux, initrd string
	imp := &cobra.Command{
		Use: "import --vmlinux FILE [--initrd FILE] [--name NAME]", Short: "Import a kernel built elsewhere (ELF vmlinux or bzImage)",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if vmlinux == "" {
				return usageError{fmt.Errorf("--vmlinux is required")}
			}
			req := api.ImportKernelRequest{Name: name, Vmlinux: abs(vmlinux), Initrd: abs(initrd)}
			return e.importKernel(cmd, req)
		},
	}
	imp.Flags().StringVar(&name, "name", "", "kernel name (default: default_kernel_name)")
	imp.Flags().StringVar(&vmlinux, "vmlinux", "", "kernel image")
	imp.Flags().StringVar(&initrd, "initrd", "", "initramfs to boot with (banger's agent is appended)")
	var debName string
	deb := &cobra.Command{
		Use:   "import-deb PATH.deb [--name NAME]",
		Short: "Import a Debian linux-image-* package (e.g. from apt-get download)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.importKernel(cmd, api.ImportKernelRequest{Name: debName, Deb: abs(args[0])})
		},
	}
	deb.Flags().StringVar(&debName, "name", "", "kernel name (default: default_kernel_name)")
	c.AddCommand(list, show, rm, imp, deb)
	c.AddCommand(newKernelRegistryCommands(e)...)
	return c
}

func (e *env) importKernel(cmd *cobra.Command, req api.ImportKernelRequest) error {
	cl, err := e.client(cmd.Context())
	if err != nil {
		return err
	}
	var k api.Kernel
	if err := cl.Stream(cmd.Context(), http.MethodPost, "/v1/kernels/import", req, &k, e.progress()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\t%s\n", k.Name, k.Version)
	return nil
}

func abs(p string) string {
	if p == "" {
		return ""
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}
