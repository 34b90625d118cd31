package helper

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/privop"
)

// fakeBuilder stands in for debootstrap: it writes content to out and a
// scratch file to workDir, or fails. With gate set, it signals started and
// waits for gate to close before finishing.
type fakeBuilder struct {
	content []byte
	err     error
	symlink bool              // make out a symlink instead of a file
	refuse  map[string]string // suite -> CheckSuite's error
	started chan struct{}
	gate    chan struct{}

	mu    sync.Mutex
	calls []string
	dirs  []string // the out directories it was given
}

// CheckSuite refuses the suites in refuse, as a host without their keyring would.
func (b *fakeBuilder) CheckSuite(suite string) error {
	if msg, ok := b.refuse[suite]; ok {
		return errors.New(msg)
	}
	return nil
}

func (b *fakeBuilder) BuildDebootstrap(ctx context.Context, suite, mirror, out, workDir string) error {
	b.mu.Lock()
	b.calls = append(b.calls, suite+" "+mirror)
	b.dirs = append(b.dirs, filepath.Dir(out))
	b.mu.Unlock()
	if b.gate != nil {
		b.started <- struct{}{}
		select {
		case <-b.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := os.WriteFile(filepath.Join(workDir, "scratch"), []byte("staging"), 0o600); err != nil {
		return err
	}
	if b.symlink {
		return os.Symlink(filepath.Join(workDir, "scratch"), out)
	}
	if err := os.WriteFile(out, b.content, 0o600); err != nil {
		return err
	}
	return b.err
}

// seen returns the calls and out directories so far.
func (b *fakeBuilder) seen() (calls, dirs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...), append([]string(nil), b.dirs...)
}

func withImages(b ImageBuilder) func(*Config) {
	return func(c *Config) { c.Images = b }
}

// buildDirEmpty fails the test unless the state dir's build directory is
// missing or empty.
func buildDirEmpty(t *testing.T, h *harness) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(h.stateDir, BuildDir))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("build dir not empty after the build: %v", names)
	}
}

func TestServerDebootstrapImage(t *testing.T) {
	content := []byte(strings.Repeat("ext4 image bytes\n", 1000))
	b := &fakeBuilder{content: content}
	h := startServer(t, withImages(b))

	res, f, err := h.client.DebootstrapImage(ctxT(t), "bookworm", "https://deb.debian.org/debian")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if string(got) != string(content) {
		t.Errorf("fd content: %d bytes, want the %d the builder wrote", len(got), len(content))
	}
	if res.Size != int64(len(content)) || res.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("result = %+v, want size %d sha256 %x", res, len(content), sum)
	}
	calls, dirs := b.seen()
	if len(calls) != 1 || calls[0] != "bookworm https://deb.debian.org/debian" {
		t.Fatalf("builder calls = %q", calls)
	}
	if want := filepath.Join(h.stateDir, BuildDir) + "/"; !strings.HasPrefix(dirs[0]+"/", want) || dirs[0]+"/" == want {
		t.Errorf("built in %s, want a fresh directory under %s", dirs[0], want)
	}
	fi, err := os.Lstat(filepath.Join(h.stateDir, BuildDir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("build dir mode %v, want 0700", fi.Mode().Perm())
	}
	buildDirEmpty(t, h)
}

func TestServerDebootstrapImageFailures(t *testing.T) {
	t.Run("builder fails", func(t *testing.T) {
		b := &fakeBuilder{content: []byte("half an image"), err: errors.New("debootstrap: exit status 1")}
		h := startServer(t, withImages(b))
		_, f, err := h.client.DebootstrapImage(ctxT(t), "bookworm", "")
		if f != nil {
			f.Close()
			t.Error("a failed build came with a file")
		}
		wantCode(t, err, privop.CodeInternal, "exit status 1")
		buildDirEmpty(t, h)
	})
	t.Run("out is a symlink", func(t *testing.T) {
		h := startServer(t, withImages(&fakeBuilder{symlink: true}))
		_, _, err := h.client.DebootstrapImage(ctxT(t), "bookworm", "")
		wantCode(t, err, privop.CodeInternal, "open built image")
		buildDirEmpty(t, h)
	})
	t.Run("not configured", func(t *testing.T) {
		h := startServer(t, nil)
		_, _, err := h.client.DebootstrapImage(ctxT(t), "bookworm", "")
		wantCode(t, err, privop.CodeInternal, "image building not configured")
	})
	t.Run("stale build dir is cleared", func(t *testing.T) {
		h := startServer(t, withImages(&fakeBuilder{content: []byte("x")}))
		stale := filepath.Join(h.stateDir, BuildDir, "img-stale")
		if err := os.MkdirAll(filepath.Join(stale, "work"), 0o700); err != nil {
			t.Fatal(err)
		}
		_, f, err := h.client.DebootstrapImage(ctxT(t), "bookworm", "")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		buildDirEmpty(t, h)
	})
}

func TestServerDebootstrapImageOneAtATime(t *testing.T) {
	b := &fakeBuilder{content: []byte("image"), started: make(chan struct{}, 1), gate: make(chan struct{})}
	h := startServer(t, withImages(b))
	ctx := ctxT(t)

	type outcome struct {
		res privop.DebootstrapImageResult
		f   *os.File
		err error
	}
	first := make(chan outcome, 1)
	go func() {
		res, f, err := h.client.DebootstrapImage(ctx, "bookworm", "")
		first <- outcome{res, f, err}
	}()
	select {
	case <-b.started:
	case <-time.After(5 * time.Second):
		close(b.gate)
		t.Fatal("first build did not start")
	}

	_, f, err := h.client.DebootstrapImage(ctx, "trixie", "")
	if f != nil {
		f.Close()
	}
	wantCode(t, err, privop.CodeBusy, "already in progress")
	if _, err := h.client.Ping(ctx); err != nil {
		t.Errorf("ping during a build: %v", err)
	}

	close(b.gate)
	o := <-first
	if o.err != nil {
		t.Fatalf("first build: %v", o.err)
	}
	o.f.Close()
	if o.res.Size != int64(len("image")) {
		t.Errorf("first build result = %+v", o.res)
	}
	if calls, _ := b.seen(); len(calls) != 1 {
		t.Errorf("builder calls = %q, want only the first build", calls)
	}
	buildDirEmpty(t, h)
}

func TestNewServerNeedsStateDirForImages(t *testing.T) {
	l := &Ledger{}
	_, err := NewServer(Config{Net: newFakeNet(t.TempDir()), Ledger: l, OwnerUID: 4242, Images: &fakeBuilder{}, StateDir: "rel/dir"})
	if err == nil || !strings.Contains(err.Error(), "state dir") {
		t.Fatalf("NewServer with a relative state dir = %v, want an error", err)
	}
}

// TestServerDebootstrapImageRootChoosesKeyring: the request can name no
// keyring and switch off no check, and a suite the builder cannot verify is
// refused before anything is built.
func TestServerDebootstrapImageRootChoosesKeyring(t *testing.T) {
	b := &fakeBuilder{content: []byte("x"), refuse: map[string]string{
		"jammy": "suite jammy: its archive keyring /usr/share/keyrings/ubuntu-archive-keyring.gpg is not installed (install the ubuntu-keyring package)",
	}}
	h := startServer(t, withImages(b))

	_, f, err := h.client.DebootstrapImage(ctxT(t), "jammy", "http://127.0.0.1:8000/")
	if f != nil {
		f.Close()
		t.Error("a refused suite came with a file")
	}
	wantCode(t, err, privop.CodeBadRequest, "install the ubuntu-keyring package")
	if _, err := os.Lstat(filepath.Join(h.stateDir, BuildDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("build dir after a refused suite: %v, want none created", err)
	}

	for _, body := range []string{
		`{"op":"debootstrap_image","args":{"suite":"bookworm","mirror":"http://127.0.0.1:8000/","keyring":"/home/owner/my.gpg"}}`,
		`{"op":"debootstrap_image","args":{"suite":"bookworm","mirror":"http://127.0.0.1:8000/","no_check_gpg":true}}`,
		`{"op":"debootstrap_image","args":{"suite":"bookworm","mirror":"http://127.0.0.1:8000/","args":["--no-check-gpg"]}}`,
	} {
		wantCode(t, rawCall(t, h.sock, privop.Frame([]byte(body))), privop.CodeBadRequest, "unknown field")
	}
	if calls, _ := b.seen(); len(calls) != 0 {
		t.Errorf("builder calls = %q, want none", calls)
	}
}
