package oci

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is an in-process registry whose blob GETs are counted and
// can be sabotaged.
type testRegistry struct {
	srv   *httptest.Server
	host  string
	mu    sync.Mutex
	gets  map[string]int
	cut   atomic.Bool // serve only half of each blob, then drop the connection
	taint atomic.Bool // serve wrong bytes
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{gets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			d := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
			r.mu.Lock()
			r.gets[d]++
			r.mu.Unlock()
			if r.cut.Load() || r.taint.Load() {
				rec := httptest.NewRecorder()
				reg.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				if r.taint.Load() {
					body = append([]byte(nil), body...)
					body[0] ^= 0xff
					w.WriteHeader(http.StatusOK)
					_, _ = w.Write(body)
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(body[:len(body)/2])
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
					}
				}
				return
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) push(t *testing.T, repo string, layers int) (string, v1.Image) {
	t.Helper()
	img, err := random.Image(200<<10, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	ref := r.host + "/" + repo + ":v1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.gets = map[string]int{}
	r.mu.Unlock()
	return ref, img
}

func TestPullCachesVerifiedBlobs(t *testing.T) {
	reg := newTestRegistry(t)
	ref, img := reg.push(t, "demo/app", 3)
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	var events []Transfer
	got, err := c.Pull(context.Background(), ref, "", func(tr Transfer) { events = append(events, tr) })
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	if len(got.Layers) != len(layers) {
		t.Fatalf("%d layers, want %d", len(got.Layers), len(layers))
	}
	for i, l := range layers {
		d, _ := l.Digest()
		if got.Layers[i].Digest != d.String() {
			t.Errorf("layer %d is %s, want %s (order must be kept)", i, got.Layers[i].Digest, d)
		}
		st, err := os.Stat(got.Layers[i].Path)
		if err != nil || st.Size() != got.Layers[i].Size {
			t.Errorf("cached blob %d: %v, size %v", i, err, st)
		}
	}
	if last := events[len(events)-1]; last.Index != 3 || last.Count != 3 || last.Done != last.Total {
		t.Errorf("last progress event %+v", last)
	}
	// Again: everything from the cache, no blob fetched.
	before := reg.blobGets()
	if _, err := c.Pull(context.Background(), ref, "", nil); err != nil {
		t.Fatal(err)
	}
	if after := reg.blobGets(); after != before {
		t.Errorf("a second pull fetched %d blobs", after-before)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.Dir, "blobs", "sha256")); len(ents) != 4 {
		t.Errorf("cache holds %d files, want the 3 layers and the config", len(ents))
	}
}

func (r *testRegistry) blobGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.gets {
		n += v
	}
	return n
}

// TestConcurrentPullsFetchEachBlobOnce: two pulls of one reference at the
// same time download every blob (layers and config) exactly once.
func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := reg.push(t, "demo/shared", 4)
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = c.Pull(context.Background(), ref, "", nil)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.gets) != 5 { // 4 layers + config
		t.Errorf("fetched %d distinct blobs, want 5", len(reg.gets))
	}
	for d, n := range reg.gets {
		if n != 1 {
			t.Errorf("blob %s fetched %d times", d, n)
		}
	}
}

// TestInterruptedAndTaintedDownloadsLeaveNothing: a download cut short or
// with the wrong content fails and leaves no blob (not even a partial or
// empty one); the next pull starts clean and succeeds.
func TestInterruptedAndTaintedDownloadsLeaveNothing(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := reg.push(t, "demo/flaky", 2)
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	for _, sabotage := range []*atomic.Bool{&reg.cut, &reg.taint} {
		sabotage.Store(true)
		_, err := c.Pull(context.Background(), ref, "", nil)
		sabotage.Store(false)
		if err == nil {
			t.Fatal("a sabotaged pull succeeded")
		}
		ents, _ := os.ReadDir(filepath.Join(c.Dir, "blobs", "sha256"))
		for _, e := range ents {
			t.Errorf("left in the cache after a failed pull: %s", e.Name())
		}
	}
	if _, err := c.Pull(context.Background(), ref, "", nil); err != nil {
		t.Fatalf("pull after failures: %v", err)
	}
}

// TestZeroByteBlobIsNeverServed: a blob file of the wrong size in the
// cache (a crash of some older writer, tampering) is replaced.
func TestZeroByteBlobIsNeverServed(t *testing.T) {
	reg := newTestRegistry(t)
	ref, img := reg.push(t, "demo/zero", 1)
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	p, err := c.BlobPath(d.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := c.Pull(context.Background(), ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(got.Layers[0].Path); st.Size() != got.Layers[0].Size || st.Size() == 0 {
		t.Errorf("served a %d-byte blob for a %d-byte layer", st.Size(), got.Layers[0].Size)
	}
}

func TestBadReferences(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	for _, ref := range []string{"", "UPPER/case:tag", "a b", "x:y:z@sha256:zz"} {
		_, err := c.Pull(context.Background(), ref, "", nil)
		var inv InvalidRefError
		if !errors.As(err, &inv) {
			t.Errorf("Pull(%q) = %v, want an InvalidRefError", ref, err)
		}
	}
	if _, err := c.Pull(context.Background(), "example.invalid/x:y", "linux/amd64/v3/extra/bad", nil); !errors.As(err, new(InvalidRefError)) {
		t.Errorf("bad platform: %v", err)
	}
	for _, d := range []string{"md5:abc", "sha256:short", "sha256:" + strings.Repeat("z", 64)} {
		if _, err := c.BlobPath(d); err == nil {
			t.Errorf("BlobPath(%q) accepted", d)
		}
	}
}

func TestPrune(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := reg.push(t, "demo/prune", 2)
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	got, err := c.Pull(context.Background(), ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	keep := func() (map[string]bool, error) {
		return map[string]bool{got.Layers[0].Digest: true, got.ConfigDigest: true}, nil
	}
	gone, _, err := c.Prune(keep, true)
	if err != nil || len(gone) != 1 || gone[0] != got.Layers[1].Digest {
		t.Fatalf("dry run = %v, %v", gone, err)
	}
	if _, err := os.Stat(got.Layers[1].Path); err != nil {
		t.Fatal("a dry run removed a blob")
	}
	if _, _, err := c.Prune(keep, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(got.Layers[1].Path); !os.IsNotExist(err) {
		t.Error("unreferenced blob kept")
	}
	if _, err := os.Stat(got.Layers[0].Path); err != nil {
		t.Error("referenced blob removed")
	}
}

// TestPruneWaitsForHeldPulls: a prune does not run while a pull is held,
// so it never takes a blob (or a partial download) from under it.
func TestPruneWaitsForHeldPulls(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := reg.push(t, "demo/held", 1)
	c := &Cache{Dir: t.TempDir(), Insecure: true}
	release := c.Hold()
	got, err := c.Pull(context.Background(), ref, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	pruned := make(chan []string, 1)
	go func() {
		gone, _, _ := c.Prune(nil, false)
		pruned <- gone
	}()
	select {
	case <-pruned:
		t.Fatal("prune ran while a pull was held")
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := os.Stat(got.Layers[0].Path); err != nil {
		t.Fatalf("the held pull's blob is gone: %v", err)
	}
	release()
	if gone := <-pruned; len(gone) != 2 { // the layer and the config, referenced by nothing
		t.Errorf("prune after release removed %v", gone)
	}
}
