package kernel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cavaliergopher/cpio"
)

// InitramfsMarker is the empty file the agent cpio adds so the agent can
// tell it runs from banger's initramfs (and must switch to the real root).
const InitramfsMarker = "/.banger-initramfs"

// AgentCpio writes a newc archive holding the agent as /init and the
// initramfs marker file.
func AgentCpio(w io.Writer, agent []byte) error {
	cw := cpio.NewWriter(w)
	if err := cw.WriteHeader(&cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: int64(len(agent)), Links: 1}); err != nil {
		return fmt.Errorf("write agent cpio: %w", err)
	}
	if _, err := cw.Write(agent); err != nil {
		return fmt.Errorf("write agent cpio: %w", err)
	}
	if err := cw.WriteHeader(&cpio.Header{Name: InitramfsMarker[1:], Mode: cpio.TypeReg | 0o644, Links: 1}); err != nil {
		return fmt.Errorf("write agent cpio: %w", err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("write agent cpio: %w", err)
	}
	return nil
}

// BootInitrd returns the path of the initramfs to boot a with: the
// artifact's initrd.img (or else its modules.cpio, if any) followed by the
// agent cpio. The kernel unpacks concatenated archives in order, so the
// agent's /init wins over one in a user initrd. The file is named by the
// sha256 of its content and built only when absent, so concurrent VM starts
// share one copy and a changed agent binary yields a new file.
func BootInitrd(a *Artifact, agentPath, cacheDir string) (string, error) {
	p, err := bootInitrd(a, agentPath, cacheDir)
	if err != nil {
		return "", fmt.Errorf("build boot initrd: %w", err)
	}
	return p, nil
}

func bootInitrd(a *Artifact, agentPath, cacheDir string) (string, error) {
	if a == nil {
		return "", errors.New("nil artifact")
	}
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return "", fmt.Errorf("read agent: %w", err)
	}
	var agentCpio bytes.Buffer
	if err := AgentCpio(&agentCpio, agent); err != nil {
		return "", err
	}
	base := a.Initrd
	if base == "" {
		base = a.ModulesCpio
	}
	var pad []byte
	h := sha256.New()
	if base != "" {
		f, err := os.Open(base)
		if err != nil {
			return "", err
		}
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		// The kernel only recognises a cpio header at a 4-byte aligned
		// offset (it skips NUL padding in between), and a user initrd may
		// end unaligned.
		pad = make([]byte, (4-n%4)%4)
		h.Write(pad)
	}
	h.Write(agentCpio.Bytes())
	final := filepath.Join(cacheDir, "initrd-"+hex.EncodeToString(h.Sum(nil))+".img")
	if _, err := os.Stat(final); err == nil {
		return final, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}

	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(cacheDir, ".tmp-initrd-")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if base != "" {
		f, err := os.Open(base)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(tmp, f)
		f.Close()
		if err != nil {
			return "", err
		}
		if _, err := tmp.Write(pad); err != nil {
			return "", err
		}
	}
	if _, err := tmp.Write(agentCpio.Bytes()); err != nil {
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	// Rename replaces atomically; a concurrent builder writes identical bytes.
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	ok = true
	return final, nil
}
