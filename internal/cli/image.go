package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/sizes"
)

func newImageCommand(e *env) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Manage root filesystem images"}
	var listJSON, showJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List images", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ims := []api.Image{}
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/images", nil, &ims); err != nil {
				return err
			}
			if listJSON {
				return printJSON(e.stdout, ims)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tSIZE\tSOURCE\tCREATED")
			for _, im := range ims {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Name, short(im.ID), sizes.Format(im.Size), im.Source, ago(im.CreatedAt))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use: "show NAME", Short: "Show one image", Args: exactArgs(1), ValidArgsFunction: completeImages(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			var im api.Image
			if err := e.call(cmd.Context(), http.MethodGet, "/v1/images/"+url.PathEscape(args[0]), nil, &im); err != nil {
				return err
			}
			if showJSON {
				return printJSON(e.stdout, im)
			}
			fmt.Fprintf(e.stdout, "name:    %s\nid:      %s\nsize:    %s\nsource:  %s\npath:    %s\nused by: %v\n",
				im.Name, im.ID, sizes.Format(im.Size), im.Source, im.Path, im.UsedBy)
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	del := &cobra.Command{
		Use: "delete NAME...", Aliases: []string{"rm"}, Short: "Delete images (refused while VMs use them)",
		Args: minArgs(1), ValidArgsFunction: completeImages(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range dedupe(args) {
				if err := e.call(cmd.Context(), http.MethodDelete, "/v1/images/"+url.PathEscape(n), nil, nil); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, n)
			}
			return nil
		},
	}
	var importName string
	imp := &cobra.Command{
		Use: "import PATH --name NAME", Short: "Import a rootfs tarball (.tar, .tar.gz, .tar.zst, .tar.xz) or directory",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if importName == "" {
				return usageError{fmt.Errorf("--name is required")}
			}
			return e.streamImage(cmd.Context(), "/v1/images/import", api.ImportImageRequest{Name: importName, Path: abs})
		},
	}
	imp.Flags().StringVar(&importName, "name", "", "image name")
	var buildName, suite, mirror string
	var minimal bool
	build := &cobra.Command{
		Use:   "build (--debootstrap SUITE | --minimal) [--name NAME]",
		Short: "Build a Debian image with debootstrap (needs root for now) or the built-in minimal image",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (suite == "") == !minimal {
				return usageError{fmt.Errorf("give exactly one of --debootstrap SUITE or --minimal")}
			}
			return e.streamImage(cmd.Context(), "/v1/images/build", api.BuildImageRequest{Name: buildName, Debootstrap: suite, Mirror: mirror, Minimal: minimal})
		},
	}
	build.Flags().StringVar(&buildName, "name", "", "image name (default debian-SUITE)")
	build.Flags().StringVar(&suite, "debootstrap", "", "Debian suite, e.g. bookworm")
	build.Flags().StringVar(&mirror, "mirror", "", "Debian mirror URL")
	build.Flags().BoolVar(&minimal, "minimal", false, "build the built-in busybox image")
	c.AddCommand(list, show, del, imp, build, newImagePullCommand(e), newImagePushCommand(e), newImageCacheCommand(e))
	return c
}

func (e *env) streamImage(ctx context.Context, path string, req any) error {
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	var im api.Image
	if err := cl.Stream(ctx, http.MethodPost, path, req, &im, e.progress()); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, im.Name)
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
