package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/namegen"
	"banger/internal/oci"
	"banger/internal/store"
)

func transferFn(f func(api.Transfer)) func(oci.Transfer) {
	return func(tr oci.Transfer) {
		if f != nil {
			f(api.Transfer(tr))
		}
	}
}

func (s *Service) needOCI() error {
	if s.opts.OCI == nil {
		return errdefs.Unavailable("no OCI cache configured")
	}
	return nil
}

// registryErr maps a registry failure: a bad reference is the caller's.
func registryErr(what string, err error) error {
	var inv oci.InvalidRefError
	var typ oci.ArtifactTypeError
	switch {
	case errors.As(err, &inv), errors.As(err, &typ):
		return errdefs.Invalid("%s: %v", what, err)
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrNotFound):
		return err
	}
	return errdefs.Unavailable("%s: %v", what, err)
}

// PushKernel publishes a stored kernel as an OCI artifact (docs/artifacts.md).
func (s *Service) PushKernel(ctx context.Context, name string, req api.PushRequest, progress Progress, transfer func(api.Transfer)) (api.PushResult, error) {
	if err := s.needOCI(); err != nil {
		return api.PushResult{}, err
	}
	k, err := s.st.GetKernel(ctx, name)
	if err != nil {
		return api.PushResult{}, err
	}
	art, err := kernel.Load(s.layout.KernelsDir, k.ID)
	if err != nil {
		return api.PushResult{}, errdefs.NotFound("kernel %q: artifact missing or damaged: %v", name, err)
	}
	tmp, err := os.MkdirTemp(s.layout.TmpDir, "kernel-push-")
	if err != nil {
		return api.PushResult{}, err
	}
	defer os.RemoveAll(tmp)
	cfg, parts, err := art.OCIParts(tmp)
	if err != nil {
		return api.PushResult{}, fmt.Errorf("prepare kernel %s: %w", name, err)
	}
	progress.say("pushing kernel %s (%s) to %s", name, k.Version, req.Ref)
	d, err := s.opts.OCI.PushArtifact(ctx, req.Ref, oci.KernelConfigType, cfg, parts, transferFn(transfer))
	if err != nil {
		return api.PushResult{}, registryErr("kernel push", err)
	}
	return api.PushResult{Ref: req.Ref, Digest: d}, nil
}

// PullKernel fetches a kernel artifact and stores it under name (default:
// the catalog's short name, else "default").
func (s *Service) PullKernel(ctx context.Context, req api.PullKernelRequest, progress Progress, transfer func(api.Transfer)) (api.Kernel, error) {
	if err := s.needOCI(); err != nil {
		return api.Kernel{}, err
	}
	ref, name := req.Ref, req.Name
	if s.opts.Catalog != nil {
		if e, ok := s.opts.Catalog.Kernel(ref); ok {
			progress.say("%s is %s in the catalog", ref, e.Ref)
			if name == "" {
				name = ref
			}
			ref = e.Ref
		}
	}
	if name == "" {
		name = s.cfg.DefaultKernelName
	}
	if err := namegen.Validate(name); err != nil {
		return api.Kernel{}, errdefs.Invalid("invalid kernel name: %v", err)
	}
	if _, err := s.st.GetKernel(ctx, name); err == nil {
		return api.Kernel{}, errdefs.Exists("kernel %q already exists (remove it with 'banger kernel rm %s')", name, name)
	}
	progress.say("pulling kernel %s", ref)
	release := s.opts.OCI.Hold()
	defer release()
	a, err := s.opts.OCI.PullArtifact(ctx, ref, oci.KernelConfigType, transferFn(transfer))
	if err != nil {
		return api.Kernel{}, registryErr("kernel pull", err)
	}
	parts, err := kernel.PartsFromOCI(a)
	if err != nil {
		return api.Kernel{}, errdefs.Invalid("kernel pull %s: %v", ref, err)
	}
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	art, err := kernel.ImportParts(ctx, s.layout.KernelsDir, parts, progress)
	if err != nil {
		return api.Kernel{}, errdefs.Invalid("kernel pull %s: %v", ref, err)
	}
	k := store.Kernel{Name: name, ID: art.ID, Version: art.Version, Source: "oci", SourceName: a.Ref + "@" + a.Digest, CreatedAt: time.Now()}
	if err := s.st.PutKernel(ctx, k, false); err != nil {
		return api.Kernel{}, err
	}
	progress.say("kernel %s ready (%s, %s)", k.Name, k.Version, k.ID[:12])
	return kernelView(k, art), nil
}

// PushImage publishes an image as a banger image bundle: its ext4 rootfs,
// zstd-compressed, and the kernel its VMs boot with, if it names one.
func (s *Service) PushImage(ctx context.Context, name string, req api.PushRequest, progress Progress, transfer func(api.Transfer)) (api.PushResult, error) {
	if err := s.needOCI(); err != nil {
		return api.PushResult{}, err
	}
	im, err := s.st.GetImage(ctx, name)
	if err != nil {
		return api.PushResult{}, err
	}
	tmp, err := os.MkdirTemp(s.layout.TmpDir, "image-push-")
	if err != nil {
		return api.PushResult{}, err
	}
	defer os.RemoveAll(tmp)
	progress.say("compressing %s", name)
	zst := filepath.Join(tmp, "rootfs.ext4.zst")
	sum, size, err := oci.CompressZstd(ctx, s.imagePath(im.ID), zst)
	if err != nil {
		return api.PushResult{}, fmt.Errorf("compress image %s: %w", name, err)
	}
	cfg, err := json.Marshal(oci.ImageConfig{Parts: []oci.ConfigPart{{MediaType: oci.ImageRootfsType, SHA256: sum, Size: size}}, Kernel: im.Meta.Kernel})
	if err != nil {
		return api.PushResult{}, err
	}
	progress.say("pushing image %s to %s", name, req.Ref)
	d, err := s.opts.OCI.PushArtifact(ctx, req.Ref, oci.ImageConfigType, cfg, []oci.Part{{MediaType: oci.ImageRootfsType, Path: zst, Title: "rootfs.ext4.zst"}}, transferFn(transfer))
	if err != nil {
		return api.PushResult{}, registryErr("image push", err)
	}
	return api.PushResult{Ref: req.Ref, Digest: d}, nil
}

// pullBundle fetches a banger image bundle at ref, or reports ok=false when
// ref is another kind of image (an ordinary container image).
func (s *Service) pullBundle(ctx context.Context, ref, name, kernelName string, progress Progress, transfer func(api.Transfer)) (store.Image, bool, error) {
	a, err := s.opts.OCI.PullArtifact(ctx, ref, oci.ImageConfigType, transferFn(transfer))
	var typ oci.ArtifactTypeError
	if errors.As(err, &typ) {
		return store.Image{}, false, nil
	}
	if err != nil {
		return store.Image{}, true, registryErr("image pull", err)
	}
	var cfg oci.ImageConfig
	if err := json.Unmarshal(a.Config, &cfg); err != nil {
		return store.Image{}, true, errdefs.Invalid("image pull %s: bad bundle config: %v", ref, err)
	}
	if len(cfg.Parts) != 1 || len(a.Parts) != 1 || cfg.Parts[0].MediaType != oci.ImageRootfsType || a.Parts[0].MediaType != oci.ImageRootfsType {
		return store.Image{}, true, errdefs.Invalid("image pull %s: a bundle holds exactly one %s part", ref, oci.ImageRootfsType)
	}
	if kernelName == "" {
		kernelName = cfg.Kernel
	}
	meta := store.ImageMeta{Ref: a.Ref, Digest: a.Digest, Kernel: kernelName, Blobs: []string{a.ConfigDigest, a.Parts[0].Digest}}
	progress.say("unpacking the image bundle")
	im, err := s.storeImageMeta(ctx, name, "oci-bundle:"+a.Ref+"@"+a.Digest, meta, false, func(out string, _ image.BuildOptions) (*image.Result, error) {
		if err := oci.DecompressZstd(ctx, a.Parts[0].Path, out, cfg.Parts[0].SHA256, cfg.Parts[0].Size, s.maxUnpacked()); err != nil {
			return nil, err
		}
		sum, err := fileDigest(out)
		if err != nil {
			return nil, err
		}
		return &image.Result{Path: out, Size: cfg.Parts[0].Size, SHA256: sum}, nil
	}, progress)
	return im, true, err
}
