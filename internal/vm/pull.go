package vm

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/oci"
	"banger/internal/store"
)

// PullImage pulls an OCI image into the blob cache and builds a banger
// image from its layers. transfer receives per-blob download progress.
func (s *Service) PullImage(ctx context.Context, req api.PullImageRequest, progress Progress, transfer func(api.Transfer)) (api.Image, error) {
	if s.opts.OCI == nil {
		return api.Image{}, errdefs.Unavailable("image pull: no OCI cache configured")
	}
	if strings.TrimSpace(req.Ref) == "" {
		return api.Image{}, errdefs.Invalid("image pull: give a reference such as docker.io/library/alpine:3.20")
	}
	name := req.Name
	if e, ok := s.catalogImage(req.Ref); ok {
		progress.say("%s is %s in the catalog", req.Ref, e.Ref)
		if name == "" {
			name = req.Ref
		}
		if req.Kernel == "" && e.Kernel != "" {
			if _, err := s.st.GetKernel(ctx, e.Kernel); err == nil {
				req.Kernel = e.Kernel
			} else {
				progress.say("note: the catalog boots %s with kernel %s, which is not here yet: 'banger kernel pull %s'", req.Ref, e.Kernel, e.Kernel)
			}
		}
		req.Ref = e.Ref
	}
	if name == "" {
		name = NameFromRef(req.Ref)
	}
	if err := validImageName(name); err != nil {
		return api.Image{}, err
	}
	if req.Kernel != "" {
		if _, err := s.st.GetKernel(ctx, req.Kernel); err != nil {
			return api.Image{}, err
		}
	}
	if _, err := s.st.GetImage(ctx, name); err == nil {
		return api.Image{}, errdefs.Exists("image %q already exists: delete it first or pull with --name", name)
	}
	progress.say("pulling %s", req.Ref)
	release := s.opts.OCI.Hold()
	defer release()
	s.imageMu.Lock()
	bim, bundle, err := s.pullBundle(ctx, req.Ref, name, req.Kernel, progress, transfer)
	s.imageMu.Unlock()
	if bundle {
		if err != nil {
			return api.Image{}, err
		}
		return s.imageView(ctx, bim), nil
	}
	pulled, err := s.opts.OCI.Pull(ctx, req.Ref, req.Platform, func(tr oci.Transfer) {
		if transfer != nil {
			transfer(api.Transfer(tr))
		}
	})
	var inv oci.InvalidRefError
	switch {
	case errors.As(err, &inv):
		return api.Image{}, errdefs.Invalid("image pull: %v", err)
	case err != nil:
		return api.Image{}, errdefs.Unavailable("image pull: %v", err)
	}
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	if _, err := s.st.GetImage(ctx, name); err == nil {
		return api.Image{}, errdefs.Exists("image %q already exists", name)
	}
	meta := store.ImageMeta{Ref: pulled.Ref, Digest: pulled.Digest, Kernel: req.Kernel, Blobs: []string{pulled.ConfigDigest}}
	var layers []image.LayerSource
	for _, l := range pulled.Layers {
		meta.Blobs = append(meta.Blobs, l.Digest)
		layers = append(layers, image.FileLayer(l.Digest, l.Path))
	}
	progress.say("building the image from %d layers", len(layers))
	im, err := s.storeImageMeta(ctx, name, "oci:"+pulled.Ref+"@"+pulled.Digest, meta, false, func(out string, opts image.BuildOptions) (*image.Result, error) {
		return image.ImportLayers(ctx, layers, out, opts)
	}, progress)
	if err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return api.Image{}, err
		}
		return api.Image{}, errdefs.Invalid("image pull %s: %v", req.Ref, err)
	}
	return s.imageView(ctx, im), nil
}

func (s *Service) catalogImage(ref string) (catalog.Entry, bool) {
	if s.opts.Catalog == nil {
		return catalog.Entry{}, false
	}
	return s.opts.Catalog.Image(ref)
}

var nameJunk = regexp.MustCompile(`[^a-z0-9]+`)

// NameFromRef derives an image name from a reference: the repository's
// last component, plus the tag unless it is "latest"
// ("docker.io/library/alpine:3.20" -> "alpine-3-20").
func NameFromRef(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	repo, tag := ref, ""
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		repo, tag = ref[:i], ref[i+1:]
	}
	n := repo[strings.LastIndexByte(repo, '/')+1:]
	if tag != "" && tag != "latest" {
		n += "-" + tag
	}
	n = strings.Trim(nameJunk.ReplaceAllString(strings.ToLower(n), "-"), "-")
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-")
	}
	if n == "" {
		n = "image"
	}
	return n
}

// PruneImageCache removes cached blobs no image was built from.
func (s *Service) PruneImageCache(ctx context.Context, dryRun bool) (api.CachePruneResult, error) {
	if s.opts.OCI == nil {
		return api.CachePruneResult{}, nil
	}
	// The cache waits for pulls in progress before asking what to keep;
	// imageMu is taken only then (pulls hold the cache, then imageMu).
	gone, size, err := s.opts.OCI.Prune(func() (map[string]bool, error) {
		s.imageMu.Lock()
		defer s.imageMu.Unlock()
		ims, err := s.st.ListImages(ctx)
		if err != nil {
			return nil, err
		}
		keep := map[string]bool{}
		for _, im := range ims {
			for _, b := range im.Meta.Blobs {
				keep[b] = true
			}
		}
		return keep, nil
	}, dryRun)
	if err != nil {
		return api.CachePruneResult{}, fmt.Errorf("prune image cache: %w", err)
	}
	return api.CachePruneResult{Removed: gone, Bytes: size, DryRun: dryRun}, nil
}
