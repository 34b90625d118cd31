package image

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/execx"
	"banger/internal/privop"
	"banger/internal/testutil"
)

// testMarkerDir is where every package of the test archive puts its one
// file: finding it under a build's staging tree means debootstrap unpacked
// a package nobody verified.
const testMarkerDir = "usr/share/banger-test-unverified"

// TestDebootstrapRefusesUnverifiedArchive serves a Debian archive on
// loopback from this process and drives the root helper's real builder at
// it with root's keyring choice. An archive with no signature, or signed by
// a key outside root's keyring, is refused before a single package is
// fetched or unpacked; the same archive signed by a key root's keyring
// holds gets as far as fetching its packages, which shows the archive is
// complete enough that a missing check would have installed them.
func TestDebootstrapRefusesUnverifiedArchive(t *testing.T) {
	testutil.RequireRoot(t)
	for _, bin := range []string{"debootstrap", "gpgv", "gpg", "gpgconf", "dpkg-deb", "wget"} {
		if _, err := execx.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	key := newTestSigner(ctx, t)
	debs := buildTestDebs(ctx, t)

	// build runs the helper's builder the way the helper does: the request
	// decoded and validated as the owner sent it, then handed over.
	build := func(t *testing.T, suite string, arch *testArchive) error {
		t.Helper()
		body := fmt.Sprintf(`{"op":"debootstrap_image","args":{"suite":%q,"mirror":%q}}`, suite, arch.url())
		op, err := privop.DecodeRequest([]byte(body))
		if err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		if err := op.Validate(); err != nil {
			t.Fatalf("validate %s: %v", body, err)
		}
		o := op.(privop.DebootstrapImage)
		var b Debootstrapper
		if err := b.CheckSuite(o.Suite); err != nil {
			return err
		}
		work := t.TempDir()
		watch := watchMarkers(t, work)
		err = b.BuildDebootstrap(ctx, o.Suite, o.Mirror, filepath.Join(work, "out.ext4"), work)
		arch.unpacked = watch()
		return err
	}

	refused := func(t *testing.T, suite string, arch *testArchive, want string) {
		t.Helper()
		err := build(t, suite, arch)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), want) {
			t.Fatalf("build from %s = %v, want a refusal mentioning %q", arch.name, err, want)
		}
		if got := arch.fetchedDebs(); len(got) > 0 {
			t.Errorf("packages fetched from an archive nobody verified: %v", got)
		}
		if arch.unpacked != "" {
			t.Errorf("unverified package unpacked: %s", arch.unpacked)
		}
		t.Logf("refused: %.300s", err)
	}

	t.Run("owner cannot name a keyring", func(t *testing.T) {
		for _, body := range []string{
			`{"op":"debootstrap_image","args":{"suite":"bookworm","keyring":"/home/owner/k.gpg"}}`,
			`{"op":"debootstrap_image","args":{"suite":"bookworm","no_check_gpg":true}}`,
		} {
			if op, err := privop.DecodeRequest([]byte(body)); err == nil {
				t.Errorf("decoded %s as %+v, want it refused", body, op)
			}
		}
	})
	t.Run("no signature", func(t *testing.T) {
		refused(t, "bookworm", serveArchive(t, "unsigned", "bookworm", debs, nil, ""), "release signature")
	})
	t.Run("InRelease by a key root does not trust", func(t *testing.T) {
		refused(t, "bookworm", serveArchive(t, "inrelease", "bookworm", debs, key, "InRelease"), "unknown key")
	})
	t.Run("Release.gpg by a key root does not trust", func(t *testing.T) {
		refused(t, "bookworm", serveArchive(t, "release-gpg", "bookworm", debs, key, "Release.gpg"), "unknown key")
	})
	t.Run("suite without its keyring", func(t *testing.T) {
		src := suiteSources["jammy"]
		if _, err := os.Stat(src.Keyring); err == nil {
			t.Skipf("%s is installed here", src.Keyring)
		}
		arch := serveArchive(t, "jammy", "jammy", debs, nil, "")
		err := build(t, "jammy", arch)
		if !errors.Is(err, ErrUnverifiable) || !strings.Contains(err.Error(), "install the ubuntu-keyring package") {
			t.Fatalf("build of jammy without its keyring = %v, want a refusal naming ubuntu-keyring", err)
		}
		if n := arch.requests(); n != 0 {
			t.Errorf("the mirror got %d requests, want none", n)
		}
	})
	// The case: a suite whose own debootstrap script names a
	// keyring this host lacks (Ubuntu's, here). Left to itself, debootstrap
	// only warns and installs whatever an owner-chosen mirror serves; with
	// root's keyring and the check forced, it refuses.
	t.Run("suite whose script keyring is missing", func(t *testing.T) {
		if _, err := os.Stat(UbuntuKeyring); err == nil {
			t.Skipf("%s is installed here", UbuntuKeyring)
		}
		swapSuite(t, "jammy", suiteSource{Keyring: DebianKeyring, Package: DebianKeyringPackage, Script: "gutsy", Mirror: "archive.ubuntu.com/ubuntu"})
		refused(t, "jammy", serveArchive(t, "jammy-unsigned", "jammy", debs, nil, ""), "release signature")
	})
	t.Run("control: a trusted signature gets to the packages", func(t *testing.T) {
		dir := t.TempDir()
		ring := filepath.Join(dir, "trusted.gpg")
		if err := os.WriteFile(ring, key.public, 0o644); err != nil {
			t.Fatal(err)
		}
		swapSuite(t, "bookworm", suiteSource{Keyring: ring, Package: "banger-test", Script: "sid", Mirror: "deb.debian.org/debian"})
		arch := serveArchive(t, "trusted", "bookworm", debs, key, "InRelease")
		err := build(t, "bookworm", arch)
		t.Logf("build: %.300v", err)
		if got := arch.fetchedDebs(); len(got) == 0 {
			t.Fatalf("nothing fetched from a validly signed archive (%v): the archive is too thin to show a missing check", err)
		}
		if arch.unpacked == "" {
			t.Errorf("no package of a validly signed archive was unpacked: the marker watch would miss an unverified one")
		}
	})
}

// swapSuite replaces suite's entry in the allow-list for the test.
func swapSuite(t *testing.T, suite string, src suiteSource) {
	old, had := suiteSources[suite]
	suiteSources[suite] = src
	t.Cleanup(func() {
		if had {
			suiteSources[suite] = old
		} else {
			delete(suiteSources, suite)
		}
	})
}

// watchMarkers polls work for a package's marker file until the returned
// stop is called, which answers the first marker seen, if any: the build
// removes its staging tree before it returns, so looking afterwards would
// prove nothing.
func watchMarkers(t *testing.T, work string) (stop func() string) {
	done := make(chan struct{})
	found := make(chan string, 1)
	go func() {
		seen := ""
		for seen == "" {
			_ = filepath.WalkDir(work, func(p string, d fs.DirEntry, err error) error {
				if err == nil && seen == "" && strings.HasSuffix(filepath.Dir(p), testMarkerDir) {
					seen = p
				}
				return nil
			})
			select {
			case <-done:
				found <- seen
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		<-done
		found <- seen
	}()
	return func() string { close(done); return <-found }
}

// testSigner is a throwaway OpenPGP key in its own GNUPGHOME.
type testSigner struct {
	home   string
	public []byte // binary, usable as a gpgv keyring
}

func newTestSigner(ctx context.Context, t *testing.T) *testSigner {
	t.Helper()
	home, err := os.MkdirTemp("", "bgpg-")
	if err != nil {
		t.Fatal(err)
	}
	s := &testSigner{home: home}
	t.Cleanup(func() {
		kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The agent gpg started for this home: stop it, it is ours.
		_, _ = execx.Default.Run(kctx, "gpgconf", "--homedir", home, "--kill", "all")
		_ = os.RemoveAll(home)
	})
	s.gpg(ctx, t, "--quick-gen-key", "banger test archive <archive@banger.invalid>", "ed25519", "sign", "never")
	s.public = s.gpg(ctx, t, "--export")
	if len(s.public) == 0 {
		t.Fatal("gpg exported no public key")
	}
	return s
}

func (s *testSigner) gpg(ctx context.Context, t *testing.T, args ...string) []byte {
	t.Helper()
	argv := append([]string{"--homedir", s.home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)
	out, err := execx.Default.Run(ctx, "gpg", argv...)
	if err != nil {
		t.Fatalf("gpg: %v", err)
	}
	return out
}

// sign signs release inline (InRelease) or detached (Release.gpg).
func (s *testSigner) sign(ctx context.Context, t *testing.T, release []byte, how string) []byte {
	t.Helper()
	in := filepath.Join(t.TempDir(), "Release")
	if err := os.WriteFile(in, release, 0o600); err != nil {
		t.Fatal(err)
	}
	mode := "--clearsign"
	if how == "Release.gpg" {
		mode = "--detach-sign"
	}
	return s.gpg(ctx, t, mode, "--output", "-", in)
}

// testDeb is one package of the test archive.
type testDeb struct {
	name, file string
	body       []byte
}

// buildTestDebs builds one tiny package for every name the build asks for
// (minbase's apt, usr-is-merged, the included ones, and one of priority
// required), each holding only its marker file.
func buildTestDebs(ctx context.Context, t *testing.T) []testDeb {
	t.Helper()
	names := append([]string{"banger-test-base", "apt", "usr-is-merged"}, debootstrapPackages...)
	dir := t.TempDir()
	var debs []testDeb
	for _, name := range names {
		root := filepath.Join(dir, name)
		for rel, body := range map[string]string{
			"DEBIAN/control":                   fmt.Sprintf("Package: %s\nVersion: 1.0\nArchitecture: amd64\nMaintainer: banger test <test@banger.invalid>\nDescription: test package\n", name),
			filepath.Join(testMarkerDir, name): "unverified\n",
		} {
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, rel), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out := filepath.Join(dir, name+".deb")
		if _, err := execx.Default.Run(ctx, "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out); err != nil {
			t.Fatalf("build %s.deb: %v", name, err)
		}
		body, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		debs = append(debs, testDeb{name: name, file: fmt.Sprintf("pool/main/%c/%s/%s_1.0_amd64.deb", name[0], name, name), body: body})
	}
	return debs
}

// testArchive is a Debian archive served on loopback that records what was
// asked of it.
type testArchive struct {
	name     string
	srv      *httptest.Server
	unpacked string // set by build: a marker seen in the staging tree

	mu  sync.Mutex
	got []string
}

func (a *testArchive) url() string { return a.srv.URL + "/debian" }

func (a *testArchive) requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

func (a *testArchive) fetchedDebs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, p := range a.got {
		if strings.HasSuffix(p, ".deb") {
			out = append(out, p)
		}
	}
	return out
}

// serveArchive serves suite's dists and pool on 127.0.0.1. With a signer,
// the Release file is signed into sigFile (InRelease or Release.gpg);
// without, only Release exists.
func serveArchive(t *testing.T, name, suite string, debs []testDeb, signer *testSigner, sigFile string) *testArchive {
	t.Helper()
	files := map[string][]byte{}
	var pkgs bytes.Buffer
	for _, d := range debs {
		sha := sha256.Sum256(d.body)
		md := md5.Sum(d.body)
		prio := "optional"
		if d.name == "banger-test-base" {
			prio = "required"
		}
		fmt.Fprintf(&pkgs, "Package: %s\nVersion: 1.0\nArchitecture: amd64\nPriority: %s\nSection: misc\nMaintainer: banger test <test@banger.invalid>\nFilename: %s\nSize: %d\nMD5sum: %s\nSHA256: %s\nDescription: test package\n\n",
			d.name, prio, d.file, len(d.body), hex.EncodeToString(md[:]), hex.EncodeToString(sha[:]))
		files[d.file] = d.body
	}
	dists := "dists/" + suite + "/"
	files[dists+"main/binary-amd64/Packages"] = pkgs.Bytes()
	psha := sha256.Sum256(pkgs.Bytes())
	pmd := md5.Sum(pkgs.Bytes())
	release := fmt.Sprintf("Origin: banger-test\nLabel: banger-test\nSuite: %s\nCodename: %s\nDate: %s\nArchitectures: amd64\nComponents: main\nDescription: unverified test archive\nSHA256:\n %s %d main/binary-amd64/Packages\nMD5Sum:\n %s %d main/binary-amd64/Packages\n",
		suite, suite, time.Now().UTC().Format(time.RFC1123Z), hex.EncodeToString(psha[:]), pkgs.Len(), hex.EncodeToString(pmd[:]), pkgs.Len())
	// MD5Sum last: debootstrap drops the final line of an InRelease's
	// message (it has no newline), as it would a real archive's last entry.
	files[dists+"Release"] = []byte(release)
	if signer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		files[dists+sigFile] = signer.sign(ctx, t, []byte(release), sigFile)
	}

	a := &testArchive{name: name}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.got = append(a.got, r.URL.Path)
		a.mu.Unlock()
		body, ok := files[strings.TrimPrefix(r.URL.Path, "/debian/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(a.srv.Close)
	return a
}
