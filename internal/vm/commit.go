package vm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/store"
)

// CommitVM publishes a VM's root disk as a new image, recording the image
// it came from. A running VM is stopped for the copy (a consistent disk)
// and started again afterwards.
func (s *Service) CommitVM(ctx context.Context, ref string, req api.CommitRequest, progress Progress) (api.Image, error) {
	if err := validImageName(req.As); err != nil {
		return api.Image{}, err
	}
	if _, err := s.st.GetImage(ctx, req.As); err == nil {
		return api.Image{}, errdefs.Exists("image %q already exists", req.As)
	}
	v, unlock, err := s.lockVM(ctx, ref)
	if err != nil {
		return api.Image{}, err
	}
	defer unlock()
	switch v.State {
	case api.StateCreating, api.StateStarting, api.StateStopping:
		return api.Image{}, errdefs.Conflict("vm %q is %s; commit it once it settles", v.Name, v.State)
	}
	wasRunning := v.State == api.StateRunning
	if wasRunning {
		progress.say("stopping %s for a consistent copy of its disk", v.Name)
		if err := s.haltLocked(ctx, &v, false); err != nil {
			return api.Image{}, err
		}
	}
	_, rootFile := s.rootKind(v)
	if _, err := os.Stat(filepath.Join(s.layout.VMDir(v.ID), rootFile)); err != nil && !s.usesSnapshot(v) {
		return api.Image{}, errdefs.NotFound("vm %q has no root disk: %v", v.Name, err)
	}
	s.imageMu.Lock()
	im, err := s.storeImageMeta(ctx, req.As, "commit:"+v.Name, store.ImageMeta{Parent: v.ImageName, VM: v.Name}, false,
		func(out string, _ image.BuildOptions) (*image.Result, error) {
			progress.say("copying %s's root disk", v.Name)
			if err := s.copyRoot(ctx, v, out); err != nil {
				return nil, fmt.Errorf("copy root disk: %w", err)
			}
			sum, err := fileDigest(out)
			if err != nil {
				return nil, err
			}
			st, err := os.Stat(out)
			if err != nil {
				return nil, err
			}
			return &image.Result{Path: out, Size: st.Size(), SHA256: sum}, nil
		}, progress)
	s.imageMu.Unlock()
	if wasRunning {
		progress.say("starting %s again", v.Name)
		if berr := s.boot(ctx, &v, progress); berr != nil && err == nil {
			err = fmt.Errorf("image %s committed, but restarting %s failed: %w", req.As, v.Name, berr)
		}
	}
	if err != nil {
		return api.Image{}, err
	}
	return s.imageView(ctx, im), nil
}
