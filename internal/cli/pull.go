package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/sizes"
)

func newImagePullCommand(e *env) *cobra.Command {
	var req api.PullImageRequest
	var asJSON bool
	c := &cobra.Command{
		Use:   "pull REF [--name NAME] [--kernel KERNEL] [--platform linux/amd64]",
		Short: "Pull an OCI image (docker.io/library/alpine:3.20, your registry's images) as a banger image",
		Long: `Pull an OCI or Docker image from a registry and build a banger image from its layers.
Credentials come from your docker config (~/.docker/config.json); without any the pull is
anonymous. Layers are cached by digest, so pulling another tag that shares them downloads
only what is new. On a terminal each layer's progress is shown; --json prints every event
as a JSON line instead (the last one holds the image).`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref = args[0]
			var im api.Image
			if err := e.transferStream(cmd.Context(), "/v1/images/pull", req, &im, asJSON); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintln(e.stdout, im.Name)
			}
			return nil
		},
	}
	c.Flags().StringVar(&req.Name, "name", "", "image name (default: from the reference, e.g. alpine-3-20)")
	c.Flags().StringVar(&req.Kernel, "kernel", "", "kernel VMs of this image boot when they name none")
	c.Flags().StringVar(&req.Platform, "platform", "linux/amd64", "platform of a multi-platform image")
	c.Flags().BoolVar(&asJSON, "json", false, "print progress and the result as JSON lines")
	return c
}

func newImageCacheCommand(e *env) *cobra.Command {
	c := &cobra.Command{Use: "cache", Short: "Manage the registry blob cache"}
	var dryRun bool
	prune := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Remove cached blobs that no image was built from",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.CachePruneResult
			path := "/v1/images/cache/prune"
			if dryRun {
				path += "?dry_run=true"
			}
			if err := e.call(cmd.Context(), http.MethodPost, path, nil, &res); err != nil {
				return err
			}
			for _, d := range res.Removed {
				fmt.Fprintln(e.stdout, d)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			fmt.Fprintf(e.stderr, "%s %d blobs (%s)\n", verb, len(res.Removed), sizes.Format(res.Bytes))
			return nil
		},
	}
	prune.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed and remove nothing")
	c.AddCommand(prune)
	return c
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// pullView draws a pull's progress on a terminal: one line per finished
// layer and a live line for the one downloading, with the total. Off a
// terminal it stays quiet except for notes.
type pullView struct {
	w        io.Writer
	tty      bool
	progress func(string)
	layers   map[int]api.Transfer
	count    int
	drawn    time.Time
	live     bool
}

func (p *pullView) event(ev api.Event) {
	if ev.Progress != "" {
		p.clearLive()
		p.progress(ev.Progress)
		return
	}
	tr := ev.Transfer
	if tr == nil || !p.tty {
		return
	}
	if p.layers == nil {
		p.layers = map[int]api.Transfer{}
	}
	p.count = tr.Count
	prev, seen := p.layers[tr.Index]
	p.layers[tr.Index] = *tr
	if tr.Done >= tr.Total && !(seen && prev.Done >= prev.Total) {
		p.clearLive()
		how := ""
		if tr.Cached {
			how = " (cached)"
		}
		fmt.Fprintf(p.w, "  layer %d/%d %s %s%s\n", tr.Index, tr.Count, shortDigest(tr.Digest), sizes.Format(tr.Total), how)
		return
	}
	if time.Since(p.drawn) < 100*time.Millisecond {
		return
	}
	p.drawn = time.Now()
	var done, total int64
	for _, l := range p.layers {
		done += l.Done
		total += l.Total
	}
	fmt.Fprintf(p.w, "\r\033[K  layer %d/%d %s %s / %s  (all layers so far: %s / %s)", tr.Index, tr.Count, shortDigest(tr.Digest),
		sizes.Format(tr.Done), sizes.Format(tr.Total), sizes.Format(done), sizes.Format(total))
	p.live = true
}

func (p *pullView) clearLive() {
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
		p.live = false
	}
}

func (p *pullView) finish() { p.clearLive() }

func shortDigest(d string) string {
	_, h, _ := strings.Cut(d, ":")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

func newVMCommitCommand(e *env) *cobra.Command {
	var as string
	c := &cobra.Command{
		Use:               "commit NAME --as IMAGE",
		Short:             "Publish a VM's root disk as a new image (a running VM is stopped for the copy and started again)",
		Args:              exactArgs(1),
		ValidArgsFunction: completeVMs(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			if as == "" {
				return usageError{fmt.Errorf("--as IMAGE is required: the new image's name")}
			}
			return e.streamImage(cmd.Context(), "/v1/vms/"+url.PathEscape(args[0])+"/commit", api.CommitRequest{As: as})
		},
	}
	c.Flags().StringVar(&as, "as", "", "name of the new image")
	return c
}

// transferStream runs a pull or push, showing progress like image pull.
func (e *env) transferStream(ctx context.Context, path string, req, out any, asJSON bool) error {
	cl, err := e.client(ctx)
	if err != nil {
		return err
	}
	view := &pullView{w: e.stderr, tty: isTTY(e.stderr), progress: e.progress()}
	enc := json.NewEncoder(e.stdout)
	err = cl.StreamEvents(ctx, http.MethodPost, path, req, out, func(ev api.Event) {
		if asJSON {
			_ = enc.Encode(ev)
			return
		}
		view.event(ev)
	})
	view.finish()
	if err == nil && asJSON {
		return enc.Encode(api.Event{Result: mustJSON(out)})
	}
	return err
}

func newKernelRegistryCommands(e *env) []*cobra.Command {
	var name string
	var asJSON bool
	pull := &cobra.Command{
		Use:   "pull REF [--name NAME]",
		Short: "Pull a kernel published as a banger OCI artifact (docs/artifacts.md), or a catalog short name",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k api.Kernel
			if err := e.transferStream(cmd.Context(), "/v1/kernels/pull", api.PullKernelRequest{Ref: args[0], Name: name}, &k, asJSON); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintln(e.stdout, k.Name)
			}
			return nil
		},
	}
	pull.Flags().StringVar(&name, "name", "", "kernel name (default: the catalog name, else \"default\")")
	pull.Flags().BoolVar(&asJSON, "json", false, "print progress and the result as JSON lines")
	var pushJSON bool
	push := &cobra.Command{
		Use:               "push NAME REF",
		Short:             "Publish a kernel to a registry as a banger OCI artifact",
		Args:              exactArgs(2),
		ValidArgsFunction: completeKernels(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res api.PushResult
			if err := e.transferStream(cmd.Context(), "/v1/kernels/"+url.PathEscape(args[0])+"/push", api.PushRequest{Ref: args[1]}, &res, pushJSON); err != nil {
				return err
			}
			if !pushJSON {
				fmt.Fprintf(e.stdout, "%s@%s\n", res.Ref, res.Digest)
			}
			return nil
		},
	}
	push.Flags().BoolVar(&pushJSON, "json", false, "print progress and the result as JSON lines")
	return []*cobra.Command{pull, push}
}

func newImagePushCommand(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:               "push NAME REF",
		Short:             "Publish an image to a registry as a banger image bundle (pull it back with image pull)",
		Args:              exactArgs(2),
		ValidArgsFunction: completeImages(e),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res api.PushResult
			if err := e.transferStream(cmd.Context(), "/v1/images/"+url.PathEscape(args[0])+"/push", api.PushRequest{Ref: args[1]}, &res, asJSON); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(e.stdout, "%s@%s\n", res.Ref, res.Digest)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print progress and the result as JSON lines")
	return c
}
