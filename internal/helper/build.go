package helper

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"banger/internal/mountinfo"
	"banger/internal/privop"

	"golang.org/x/sys/unix"
)

// ImageBuilder builds root images for the debootstrap_image op. The
// helper's binary implements it with internal/image; tests use a fake.
// Suite and mirror have been validated; out and workDir are fresh paths
// inside a root-owned 0700 directory of the helper's state dir.
type ImageBuilder interface {
	// CheckSuite refuses a suite whose packages root cannot verify on
	// this host (not in the builder's allow-list, or its archive keyring
	// missing), naming what to install. The keyring is the builder's
	// choice; nothing in the request names one.
	CheckSuite(suite string) error
	// BuildDebootstrap writes the finished ext4 image to out, staging in
	// workDir. Mirror empty means the builder's default.
	BuildDebootstrap(ctx context.Context, suite, mirror, out, workDir string) error
}

// BuildDir is the directory, inside the helper's state dir, where images
// are built. It holds at most one build at a time and nothing between
// builds.
const BuildDir = "build"

// buildDebootstrap runs one image build in a fresh directory under the
// state dir and answers with the image's fd. The directory is removed
// before answering (the open fd keeps the image alive) and on every
// failure, so nothing is left on disk.
func (s *Server) buildDebootstrap(ctx context.Context, o privop.DebootstrapImage) (privop.DebootstrapImageResult, *os.File, error) {
	var res privop.DebootstrapImageResult
	if s.cfg.Images == nil {
		return res, nil, privop.Errorf(privop.CodeInternal, "image building not configured")
	}
	// Before the build lock: a suite root cannot verify is refused at once,
	// whatever else is building.
	if err := s.cfg.Images.CheckSuite(o.Suite); err != nil {
		return res, nil, privop.Errorf(privop.CodeBadRequest, "%v", err)
	}
	if !s.buildMu.TryLock() {
		return res, nil, privop.Errorf(privop.CodeBusy, "busy: an image build is already in progress; retry when it is done")
	}
	defer s.buildMu.Unlock()

	root := filepath.Join(s.cfg.StateDir, BuildDir)
	// Only one build runs at a time, so anything already here was left by a
	// helper that died mid-build.
	if err := removeBuildTree(root); err != nil {
		return res, nil, err
	}
	if err := os.Mkdir(root, 0o700); err != nil {
		return res, nil, fmt.Errorf("create build dir: %w", err)
	}
	if err := checkPrivateDir(root); err != nil {
		return res, nil, fmt.Errorf("check build dir: %w", err)
	}
	dir, err := os.MkdirTemp(root, "img-")
	if err != nil {
		return res, nil, fmt.Errorf("create build dir: %w", err)
	}
	defer func() {
		if err := removeBuildTree(dir); err != nil {
			s.log.Error("build dir left behind", "dir", dir, "err", err)
		}
	}()
	workDir := filepath.Join(dir, "work")
	if err := os.Mkdir(workDir, 0o700); err != nil {
		return res, nil, fmt.Errorf("create work dir: %w", err)
	}
	out := filepath.Join(dir, "image.ext4")
	if err := s.cfg.Images.BuildDebootstrap(ctx, o.Suite, o.Mirror, out, workDir); err != nil {
		return res, nil, fmt.Errorf("build %s image: %w", o.Suite, err)
	}
	f, err := os.OpenFile(out, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return res, nil, fmt.Errorf("open built image: %w", err)
	}
	if res, err = finishImage(f, dir); err != nil {
		f.Close()
		return res, nil, err
	}
	return res, f, nil
}

// finishImage checks that f is a regular file, removes dir (f stays
// readable), and hashes f from its start, leaving it at offset 0.
func finishImage(f *os.File, dir string) (privop.DebootstrapImageResult, error) {
	var res privop.DebootstrapImageResult
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("stat built image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return res, fmt.Errorf("built image is not a regular file (mode %v)", fi.Mode())
	}
	if err := removeBuildTree(dir); err != nil {
		return res, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return res, fmt.Errorf("hash built image: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return res, fmt.Errorf("rewind built image: %w", err)
	}
	res.Size = n
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	return res, nil
}

// removeBuildTree removes dir and everything in it, unless something is
// still mounted below it (a debootstrap that died with /proc mounted in its
// tree): removal must never descend into a live mount.
func removeBuildTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	mounted, err := mountinfo.Below(dir)
	if err != nil {
		return fmt.Errorf("remove build dir: %w", err)
	}
	if len(mounted) > 0 {
		return fmt.Errorf("remove build dir %s: still mounted below it: %v", dir, mounted)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove build dir: %w", err)
	}
	return nil
}
