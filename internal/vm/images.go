package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/config"
	"banger/internal/errdefs"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/namegen"
	"banger/internal/privop"
	"banger/internal/store"
)

const rootfsFile = "rootfs.ext4"

// noSeedFile, beside an image's ext4, says why the image has no work seed,
// so that VMs made from it do not try to capture one again.
const noSeedFile = "work-seed.none"

// imagePath is where the ext4 of content id lives.
func (s *Service) imagePath(id string) string {
	return filepath.Join(s.layout.ImagesDir, id, rootfsFile)
}

// captureWorkSeed stores the work seed of the image in dir beside its ext4,
// staging in workDir. It never fails the caller: without a seed, work disks
// start empty. A /root that can never become a seed (too big, unreadable)
// is recorded as such; other failures are retried by the next VM.
func (s *Service) captureWorkSeed(ctx context.Context, dir, workDir string, progress Progress) bool {
	res, err := image.CaptureWorkSeed(ctx, filepath.Join(dir, rootfsFile), filepath.Join(dir, image.WorkSeedFile), workDir)
	if err != nil {
		progress.say("note: no work seed, so VMs of this image start with an empty /root: %v", err)
		// Never recorded for good when the capture was cut short.
		if ctx.Err() == nil && (errors.Is(err, image.ErrWorkSeedTooLarge) || errors.Is(err, image.ErrWorkSeedUnreadable)) {
			if werr := atomicfile.Write(filepath.Join(dir, noSeedFile), []byte(err.Error()+"\n"), 0o600); werr != nil {
				s.log.Warn("record missing work seed", "dir", dir, "err", werr)
			}
		} else {
			s.log.Warn("capture work seed", "dir", dir, "err", err)
		}
		return false
	}
	for _, sk := range res.Skipped {
		progress.say("work seed: skipped %s: %s", sk.Path, sk.Reason)
	}
	return true
}

// workSeed returns the work seed of image id for a new work disk, or "" for
// an empty disk. Images stored before seeds existed get theirs on first use.
func (s *Service) workSeed(ctx context.Context, id string, progress Progress) string {
	dir := filepath.Join(s.layout.ImagesDir, id)
	seed := filepath.Join(dir, image.WorkSeedFile)
	if _, err := os.Stat(seed); err == nil {
		return seed
	}
	if _, err := os.Stat(filepath.Join(dir, noSeedFile)); err == nil {
		return ""
	}
	progress.say("capturing the image's /root as its work seed")
	if s.captureWorkSeed(ctx, dir, s.layout.TmpDir, progress) {
		return seed
	}
	return ""
}

func (s *Service) imageView(ctx context.Context, im store.Image) api.Image {
	out := api.Image{Name: im.Name, ID: im.ID, Size: im.Size, Source: im.Source, CreatedAt: im.CreatedAt, Path: s.imagePath(im.ID),
		Ref: im.Meta.Ref, Digest: im.Meta.Digest, Kernel: im.Meta.Kernel, Parent: im.Meta.Parent}
	if vms, err := s.st.ListVMs(ctx); err == nil {
		for _, v := range vms {
			if v.ImageName == im.Name {
				out.UsedBy = append(out.UsedBy, v.Name)
			}
		}
	}
	return out
}

// resolveImage finds the image a VM should use. When no image was named
// and the configured default does not exist, the built-in minimal image is
// used (built on first use), and the caller is told so.
func (s *Service) resolveImage(ctx context.Context, name string, progress Progress) (store.Image, error) {
	explicit := name != ""
	if !explicit {
		name = s.cfg.DefaultImageName
	}
	im, err := s.st.GetImage(ctx, name)
	if err == nil {
		if _, serr := os.Stat(s.imagePath(im.ID)); serr != nil {
			return im, errdefs.NotFound("image %q: its file is missing (%v); re-import it", name, serr)
		}
		return im, nil
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		return im, err
	}
	if explicit && name != config.MinimalImageName {
		return im, errdefs.NotFound("image %q not found (see 'banger image list')", name)
	}
	im, err = s.EnsureMinimal(ctx, progress)
	if err == nil && name != config.MinimalImageName {
		// A note, not an error: the caller shows it once the VM really is
		// created, so a request that fails for another reason stays quiet.
		im.Note = fmt.Sprintf("note: image %q not found, using the built-in minimal image (build it with 'banger image build --debootstrap bookworm --name %s', or set default_image_name = \"minimal\")", name, name)
	}
	return im, err
}

// EnsureMinimal returns the built-in minimal image, building it if needed.
func (s *Service) EnsureMinimal(ctx context.Context, progress Progress) (store.Image, error) {
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	if im, err := s.st.GetImage(ctx, config.MinimalImageName); err == nil {
		if _, serr := os.Stat(s.imagePath(im.ID)); serr == nil {
			return im, nil
		}
	}
	progress.say("building the built-in minimal image (busybox + banger agent)")
	return s.storeImage(ctx, config.MinimalImageName, "builtin:minimal", true, func(out string, opts image.BuildOptions) (*image.Result, error) {
		return image.BuildMinimal(ctx, out, opts)
	}, progress)
}

// storeImage builds an image with build into staging and publishes it
// content-addressed under its sha256. The caller holds imageMu.
func (s *Service) storeImage(ctx context.Context, name, source string, replace bool, build func(out string, opts image.BuildOptions) (*image.Result, error), progress Progress) (store.Image, error) {
	return s.storeImageMeta(ctx, name, source, store.ImageMeta{}, replace, build, progress)
}

// storeImageMeta is storeImage recording where the image came from.
func (s *Service) storeImageMeta(ctx context.Context, name, source string, meta store.ImageMeta, replace bool, build func(out string, opts image.BuildOptions) (*image.Result, error), progress Progress) (store.Image, error) {
	tmp, err := os.MkdirTemp(s.layout.TmpDir, "image-")
	if err != nil {
		return store.Image{}, fmt.Errorf("stage image: %w", err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, rootfsFile)
	res, err := build(out, image.BuildOptions{WorkDir: tmp, Progress: progress, Hostname: name, MaxUnpacked: s.cfg.MaxUnpackedBytes()})
	if err != nil {
		return store.Image{}, err
	}
	for _, sk := range res.Skipped {
		progress.say("skipped %s: %s", sk.Path, sk.Reason)
	}
	final := filepath.Join(s.layout.ImagesDir, res.SHA256)
	if _, err := os.Stat(filepath.Join(final, rootfsFile)); err != nil {
		dir := filepath.Join(tmp, "publish")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return store.Image{}, fmt.Errorf("publish image: %w", err)
		}
		if err := os.Rename(out, filepath.Join(dir, rootfsFile)); err != nil {
			return store.Image{}, fmt.Errorf("publish image: %w", err)
		}
		s.captureWorkSeed(ctx, dir, tmp, progress)
		_ = os.RemoveAll(final) // a half-published dir from a crash
		if err := os.Rename(dir, final); err != nil {
			return store.Image{}, fmt.Errorf("publish image: %w", err)
		}
	}
	im := store.Image{Name: name, ID: res.SHA256, Size: res.Size, Source: source, CreatedAt: time.Now(), Meta: meta}
	if err := s.st.PutImage(ctx, im, replace); err != nil {
		return im, err
	}
	progress.say("image %s ready (%s)", name, res.SHA256[:12])
	return im, nil
}

func validImageName(name string) error {
	if err := namegen.Validate(name); err != nil {
		return errdefs.Invalid("invalid image name: %v", err)
	}
	return nil
}

// ImportImage imports a rootfs tarball or directory from the host.
func (s *Service) ImportImage(ctx context.Context, req api.ImportImageRequest, progress Progress) (api.Image, error) {
	if err := validImageName(req.Name); err != nil {
		return api.Image{}, err
	}
	if !filepath.IsAbs(req.Path) {
		return api.Image{}, errdefs.Invalid("image source %q: want an absolute path", req.Path)
	}
	st, err := os.Stat(req.Path)
	if err != nil {
		return api.Image{}, errdefs.Invalid("image source: %v", err)
	}
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	if _, err := s.st.GetImage(ctx, req.Name); err == nil {
		return api.Image{}, errdefs.Exists("image %q already exists", req.Name)
	}
	im, err := s.storeImage(ctx, req.Name, "import:"+filepath.Base(req.Path), false, func(out string, opts image.BuildOptions) (*image.Result, error) {
		if st.IsDir() {
			return image.ImportDir(ctx, req.Path, out, opts)
		}
		f, err := os.Open(req.Path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return image.ImportTar(ctx, f, out, opts)
	}, progress)
	if err != nil {
		if errors.Is(err, errdefs.ErrExists) {
			return api.Image{}, err
		}
		return api.Image{}, errdefs.Invalid("import image %q: %v", req.Name, err)
	}
	return s.imageView(ctx, im), nil
}

// BuildImage builds the minimal image or a debootstrap image.
func (s *Service) BuildImage(ctx context.Context, req api.BuildImageRequest, progress Progress) (api.Image, error) {
	if req.Minimal {
		im, err := s.EnsureMinimal(ctx, progress)
		if err != nil {
			return api.Image{}, err
		}
		return s.imageView(ctx, im), nil
	}
	if req.Debootstrap == "" {
		return api.Image{}, errdefs.Invalid("image build: give --debootstrap SUITE or --minimal")
	}
	name := req.Name
	if name == "" {
		name = "debian-" + req.Debootstrap
	}
	if err := validImageName(name); err != nil {
		return api.Image{}, err
	}
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	if _, err := s.st.GetImage(ctx, name); err == nil {
		return api.Image{}, errdefs.Exists("image %q already exists", name)
	}
	im, err := s.storeImage(ctx, name, "debootstrap:"+req.Debootstrap, false, func(out string, opts image.BuildOptions) (*image.Result, error) {
		if err := s.debootstrap(ctx, req.Debootstrap, req.Mirror, out, opts.WorkDir, progress); err != nil {
			return nil, err
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
	if err != nil {
		return api.Image{}, err
	}
	return s.imageView(ctx, im), nil
}

// debootstrap builds a Debian image at out. With a root helper (the normal,
// privilege-split setup) the helper builds it and hands the finished file
// over as an fd; otherwise it runs in-process, which only a root bangerd may.
func (s *Service) debootstrap(ctx context.Context, suite, mirror, out, workDir string, progress Progress) error {
	if s.net == nil {
		return s.priv.Do(ctx, privop.BuildDebootstrapImage{Suite: suite, Mirror: mirror, Out: out, WorkDir: workDir}, progress)
	}
	progress.say("building %s with debootstrap through the root helper (a minute or more)", suite)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, privop.BuildCallTimeout)
		defer cancel()
	}
	_, f, err := s.net.Helper.Call(ctx, privop.DebootstrapImage{Suite: suite, Mirror: mirror})
	if err != nil {
		return fmt.Errorf("debootstrap through the root helper: %w", err)
	}
	if f == nil {
		return errors.New("debootstrap through the root helper: no image came back")
	}
	defer f.Close()
	return image.CloneFrom(f, out)
}

// ListImages returns every image.
func (s *Service) ListImages(ctx context.Context) ([]api.Image, error) {
	ims, err := s.st.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Image, 0, len(ims))
	for _, im := range ims {
		out = append(out, s.imageView(ctx, im))
	}
	return out, nil
}

// GetImage returns one image.
func (s *Service) GetImage(ctx context.Context, name string) (api.Image, error) {
	im, err := s.st.GetImage(ctx, name)
	if err != nil {
		return api.Image{}, err
	}
	return s.imageView(ctx, im), nil
}

// DeleteImage removes an image name, and its file when no other name uses
// it. It refuses while VMs were created from it.
func (s *Service) DeleteImage(ctx context.Context, name string) error {
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	im, err := s.st.GetImage(ctx, name)
	if err != nil {
		return err
	}
	if v := s.imageView(ctx, im); len(v.UsedBy) > 0 {
		return errdefs.Conflict("image %q is used by vm(s) %v: delete them first", name, v.UsedBy)
	}
	if err := s.st.DeleteImage(ctx, name); err != nil {
		return err
	}
	if used, err := s.st.ImageIDInUse(ctx, im.ID); err == nil && !used {
		return removeAll(filepath.Join(s.layout.ImagesDir, im.ID))
	}
	return nil
}

func kernelView(k store.Kernel, a *kernel.Artifact) api.Kernel {
	out := api.Kernel{Name: k.Name, ID: k.ID, Version: k.Version, Source: k.Source, SourceName: k.SourceName, CreatedAt: k.CreatedAt}
	if a != nil {
		out.Dir = a.Dir
		out.BootModules = a.Manifest.BootModules
		out.HasInitrd = a.Manifest.HasInitrd
	}
	return out
}

// ImportKernel imports a Debian kernel package or a vmlinux (+initrd).
func (s *Service) ImportKernel(ctx context.Context, req api.ImportKernelRequest, progress Progress) (api.Kernel, error) {
	if req.Name == "" {
		req.Name = s.cfg.DefaultKernelName
	}
	if err := namegen.Validate(req.Name); err != nil {
		return api.Kernel{}, errdefs.Invalid("invalid kernel name: %v", err)
	}
	for _, p := range []string{req.Deb, req.Vmlinux, req.Initrd} {
		if p != "" && !filepath.IsAbs(p) {
			return api.Kernel{}, errdefs.Invalid("kernel source %q: want an absolute path", p)
		}
	}
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	if _, err := s.st.GetKernel(ctx, req.Name); err == nil {
		return api.Kernel{}, errdefs.Exists("kernel %q already exists (remove it with 'banger kernel rm %s')", req.Name, req.Name)
	}
	var art *kernel.Artifact
	var err error
	source := ""
	switch {
	case req.Deb != "":
		source = "deb"
		art, err = kernel.ImportDeb(ctx, req.Deb, s.layout.KernelsDir, progress)
	case req.Vmlinux != "":
		source = "files"
		art, err = kernel.ImportFiles(ctx, req.Vmlinux, req.Initrd, s.layout.KernelsDir, progress)
	default:
		return api.Kernel{}, errdefs.Invalid("kernel import: give a .deb or --vmlinux")
	}
	if err != nil {
		return api.Kernel{}, errdefs.Invalid("%v", err)
	}
	k := store.Kernel{Name: req.Name, ID: art.ID, Version: art.Version, Source: source, SourceName: art.Manifest.SourceName, CreatedAt: time.Now()}
	if err := s.st.PutKernel(ctx, k, false); err != nil {
		return api.Kernel{}, err
	}
	progress.say("kernel %s ready (%s, %s)", k.Name, k.Version, k.ID[:12])
	return kernelView(k, art), nil
}

// ListKernels returns every kernel.
func (s *Service) ListKernels(ctx context.Context) ([]api.Kernel, error) {
	ks, err := s.st.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Kernel, 0, len(ks))
	for _, k := range ks {
		a, _ := kernel.Load(s.layout.KernelsDir, k.ID)
		out = append(out, kernelView(k, a))
	}
	return out, nil
}

// GetKernel returns one kernel.
func (s *Service) GetKernel(ctx context.Context, name string) (api.Kernel, error) {
	k, err := s.st.GetKernel(ctx, name)
	if err != nil {
		return api.Kernel{}, err
	}
	a, _ := kernel.Load(s.layout.KernelsDir, k.ID)
	return kernelView(k, a), nil
}

// RemoveKernel removes a kernel name, and its artifact when nothing else
// (another name or a VM) uses it.
func (s *Service) RemoveKernel(ctx context.Context, name string) error {
	s.imageMu.Lock()
	defer s.imageMu.Unlock()
	k, err := s.st.GetKernel(ctx, name)
	if err != nil {
		return err
	}
	if err := s.st.DeleteKernel(ctx, name); err != nil {
		return err
	}
	if used, err := s.st.KernelIDInUse(ctx, k.ID); err == nil && !used {
		return kernel.Remove(s.layout.KernelsDir, k.ID)
	}
	return nil
}

// maxUnpacked is how much one import may unpack: image_max_unpacked, or
// the image package's default.
func (s *Service) maxUnpacked() int64 {
	if n := s.cfg.MaxUnpackedBytes(); n > 0 {
		return n
	}
	return image.DefaultMaxUnpacked
}
