package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/agentproto"
)

// maxSizelessRead bounds get of files whose stat size is 0 (procfs, sysfs):
// they are read fully to learn their real size.
const maxSizelessRead = 16 << 20

// putFile replies once the destination is ready, reads exactly Size bytes,
// and replies again after the file is durably in place. The file appears
// atomically: it is written to a temporary name and renamed.
func putFile(w io.Writer, r io.Reader, req *agentproto.Request) {
	tmp, err := preparePut(req)
	if err != nil {
		reply(w, err)
		return
	}
	reply(w, nil)
	if err := finishPut(tmp, r, req); err != nil {
		_ = os.Remove(tmp.Name())
		reply(w, err)
		return
	}
	reply(w, nil)
}

func preparePut(req *agentproto.Request) (*os.File, error) {
	if !filepath.IsAbs(req.Path) {
		return nil, fmt.Errorf("put %q: path must be absolute", req.Path)
	}
	if req.Size < 0 {
		return nil, fmt.Errorf("put %q: negative size", req.Path)
	}
	dir := filepath.Dir(req.Path)
	if req.Mkdirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("put %q: create parents: %w", req.Path, unwrapPath(err))
		}
	}
	if st, err := os.Stat(req.Path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("put %q: is a directory", req.Path)
	}
	tmp, err := os.CreateTemp(dir, ".banger-put-*")
	if err != nil {
		return nil, fmt.Errorf("put %q: create temporary file: %w", req.Path, unwrapPath(err))
	}
	return tmp, nil
}

func finishPut(tmp *os.File, r io.Reader, req *agentproto.Request) (err error) {
	defer func() {
		if cerr := tmp.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("put %q: close: %w", req.Path, cerr)
		}
	}()
	if n, err := io.CopyN(tmp, r, req.Size); err != nil {
		return fmt.Errorf("put %q: receive data (%d of %d bytes): %w", req.Path, n, req.Size, err)
	}
	mode := os.FileMode(req.Mode & 0o777)
	if req.Mode == 0 {
		mode = 0o644
	}
	mode |= specialBits(req.Mode)
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("put %q: chmod: %w", req.Path, unwrapPath(err))
	}
	if req.UID != os.Getuid() || req.GID != os.Getgid() {
		if err := tmp.Chown(req.UID, req.GID); err != nil {
			return fmt.Errorf("put %q: chown: %w", req.Path, unwrapPath(err))
		}
		// chown clears set-id bits; restore the requested mode.
		if err := tmp.Chmod(mode); err != nil {
			return fmt.Errorf("put %q: chmod: %w", req.Path, unwrapPath(err))
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("put %q: fsync: %w", req.Path, unwrapPath(err))
	}
	if err := os.Rename(tmp.Name(), req.Path); err != nil {
		return fmt.Errorf("put %q: rename: %w", req.Path, unwrapPath(errors.Unwrap(err)))
	}
	if d, err := os.Open(filepath.Dir(req.Path)); err == nil {
		_ = d.Sync() // make the rename durable; best-effort
		_ = d.Close()
	}
	return nil
}

// specialBits maps the Unix setuid/setgid/sticky bits to os.FileMode.
func specialBits(m uint32) os.FileMode {
	var out os.FileMode
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

// unixMode maps os.FileMode permission and special bits back to Unix bits.
func unixMode(m os.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}

// getFile replies with the size and mode of a regular file and streams it.
func getFile(w io.Writer, req *agentproto.Request) {
	if !filepath.IsAbs(req.Path) {
		reply(w, fmt.Errorf("get %q: path must be absolute", req.Path))
		return
	}
	f, err := os.Open(req.Path)
	if err != nil {
		reply(w, fmt.Errorf("get %q: %w", req.Path, unwrapPath(err)))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		reply(w, fmt.Errorf("get %q: %w", req.Path, unwrapPath(err)))
		return
	}
	if st.IsDir() {
		reply(w, fmt.Errorf("get %q: is a directory", req.Path))
		return
	}
	if !st.Mode().IsRegular() {
		reply(w, fmt.Errorf("get %q: not a regular file", req.Path))
		return
	}
	var src io.Reader = f
	size := st.Size()
	if size == 0 {
		b, err := io.ReadAll(io.LimitReader(f, maxSizelessRead+1))
		if err != nil {
			reply(w, fmt.Errorf("get %q: %w", req.Path, unwrapPath(err)))
			return
		}
		if len(b) > maxSizelessRead {
			reply(w, fmt.Errorf("get %q: file without a size is larger than %d bytes", req.Path, maxSizelessRead))
			return
		}
		src, size = bytes.NewReader(b), int64(len(b))
	}
	if err := agentproto.WriteJSONLine(w, agentproto.Reply{OK: true, Size: size, FileMode: unixMode(st.Mode())}); err != nil {
		return
	}
	// A file that shrinks underneath leaves the stream short; the host sees
	// an unexpected EOF, which is the truthful outcome.
	_, _ = io.CopyN(w, src, size)
}
