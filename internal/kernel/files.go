package kernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// ImportFiles imports a user-supplied kernel: vmlinuxPath may be an ELF
// vmlinux or an x86 bzImage (the ELF is extracted); initrdPath, if not
// empty, is stored unchanged as initrd.img and later placed before the
// agent in the boot initramfs.
func ImportFiles(ctx context.Context, vmlinuxPath, initrdPath, kernelsDir string, progress func(string)) (*Artifact, error) {
	a, err := importFiles(ctx, vmlinuxPath, initrdPath, kernelsDir, progress)
	if err != nil {
		return nil, fmt.Errorf("import kernel %q: %w", vmlinuxPath, err)
	}
	return a, nil
}

func importFiles(ctx context.Context, vmlinuxPath, initrdPath, kernelsDir string, progress func(string)) (*Artifact, error) {
	img, err := readFileLimited(vmlinuxPath, maxVmlinuxSize)
	if err != nil {
		return nil, err
	}
	progressf(progress, "reading kernel %s", filepath.Base(vmlinuxPath))
	vmlinux, err := ExtractVmlinux(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("extract vmlinux: %w", err)
	}
	img = nil

	tmp, err := newTempDir(kernelsDir)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(tmp)
		}
	}()
	if err := writeFileSync(filepath.Join(tmp, vmlinuxName), vmlinux); err != nil {
		return nil, err
	}
	vmSum := sha256.Sum256(vmlinux)
	version := kernelVersionFromImage(vmlinux)
	vmlinux = nil

	var initrdSum []byte
	if initrdPath != "" {
		progressf(progress, "copying initrd %s", filepath.Base(initrdPath))
		if initrdSum, err = copyHashed(initrdPath, filepath.Join(tmp, initrdName)); err != nil {
			return nil, fmt.Errorf("copy initrd: %w", err)
		}
	}
	m := Manifest{
		ID:            artifactID(vmSum[:], nil, initrdSum),
		Version:       version,
		Source:        SourceFiles,
		SourceName:    filepath.Base(vmlinuxPath),
		Created:       time.Now().UTC().Truncate(time.Second),
		VmlinuxSHA256: hex.EncodeToString(vmSum[:]),
		BootModules:   []string{},
		HasInitrd:     initrdPath != "",
	}
	a, err := commit(kernelsDir, tmp, m)
	if err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	committed = true
	return a, nil
}

func readFileLimited(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("file is larger than %d bytes", limit)
	}
	return readLimited(f, limit)
}

// copyHashed copies src to a new file dst, fsyncs it and returns the
// sha256 of the bytes copied.
func copyHashed(src, dst string) ([]byte, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
