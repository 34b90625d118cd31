// Package layering has no code of its own: its tests enforce banger's import
// rules (which binary may depend on which internal package) and that every
// package documents what it owns.
package layering

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

const module = "banger"

// listedPackage is the part of `go list -json` output these tests read.
type listedPackage struct {
	ImportPath string
	Name       string
	Dir        string
	Standard   bool
	Imports    []string
	GoFiles    []string
	CgoFiles   []string
}

// depGraph is the dependency closure of one root package.
type depGraph struct {
	root string
	pkgs map[string]listedPackage
}

var (
	graphMu    sync.Mutex
	graphCache = map[string]*depGraph{}
)

func goTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH")
	}
	return p
}

// goList runs `go list -json args...` and decodes its stream of packages.
func goList(t *testing.T, args ...string) []listedPackage {
	t.Helper()
	gobin := goTool(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(gobin, append([]string{"list", "-json"}, args...)...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var out []listedPackage
	dec := json.NewDecoder(&stdout)
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		out = append(out, p)
	}
	return out
}

// deps returns the (cached) non-test dependency closure of root.
func deps(t *testing.T, root string) *depGraph {
	t.Helper()
	graphMu.Lock()
	defer graphMu.Unlock()
	if g, ok := graphCache[root]; ok {
		return g
	}
	g := &depGraph{root: root, pkgs: map[string]listedPackage{}}
	for _, p := range goList(t, "-deps", root) {
		g.pkgs[p.ImportPath] = p
	}
	if _, ok := g.pkgs[root]; !ok {
		t.Fatalf("go list -deps %s did not list %s itself", root, root)
	}
	graphCache[root] = g
	return g
}

// chain returns the shortest import chain root -> ... -> target, or nil
// when root does not depend on target.
func (g *depGraph) chain(target string) []string {
	if _, ok := g.pkgs[target]; !ok {
		return nil
	}
	prev := map[string]string{g.root: ""}
	queue := []string{g.root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == target {
			var path []string
			for p := cur; p != ""; p = prev[p] {
				path = append([]string{p}, path...)
			}
			return path
		}
		for _, imp := range g.pkgs[cur].Imports {
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = cur
			queue = append(queue, imp)
		}
	}
	// Listed but unreachable through Imports (should not happen): still
	// report it, without a chain.
	return []string{g.root, "...", target}
}

func internalPkgs(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = module + "/internal/" + n
	}
	return out
}

// TestBinariesDoNotDependOnForbiddenPackages keeps each binary to its own
// side of the socket: the CLI talks to bangerd only through the API client,
// the static guest agent carries nothing of the host side, and the root
// helper carries nothing of the daemon.
func TestBinariesDoNotDependOnForbiddenPackages(t *testing.T) {
	tests := []struct {
		root      string
		forbidden []string
	}{
		{
			root: module + "/cmd/banger",
			forbidden: internalPkgs("daemon", "vm", "vmm", "vmm/qemu", "vmm/firecracker", "store", "image", "kernel",
				"agent", "privop", "agentclient", "jail", "oci", "testutil"),
		},
		{
			root: module + "/cmd/banger-agent",
			forbidden: internalPkgs("daemon", "vm", "vmm", "store", "image", "kernel", "cli",
				"api", "api/client", "privop", "agentclient", "workspace", "vmm/firecracker", "oci", "testutil"),
		},
		{
			root:      module + "/cmd/bangerd",
			forbidden: internalPkgs("cli", "workspace", "jail", "helper", "dmsnap", "testutil"),
		},
		{
			// The root helper carries none of the daemon: a bug there
			// must not become a root bug. It may use internal/image, a
			// shared build library (debootstrap_image runs it as root),
			// but nothing that holds daemon state or serves the API.
			root: module + "/cmd/banger-helper",
			forbidden: internalPkgs("daemon", "vm", "store", "kernel", "cli", "api", "api/client",
				"agentclient", "agent", "vmm", "vmm/qemu", "vmm/firecracker", "privop/client", "workspace", "oci", "testutil"),
		},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.root, module+"/"), func(t *testing.T) {
			g := deps(t, tc.root)
			for _, f := range tc.forbidden {
				if c := g.chain(f); c != nil {
					t.Errorf("%s must not depend on %s; import chain: %s", tc.root, f, strings.Join(c, " -> "))
				}
			}
		})
	}
}

// TestLeafPackagesImportOnlyStdlib keeps the shared wire and error packages
// free of third-party and other banger code, so every binary (including the
// static agent) can import them without dragging anything else in.
func TestLeafPackagesImportOnlyStdlib(t *testing.T) {
	for _, root := range internalPkgs("api", "agentproto", "errdefs", "privop", "procstat", "textsafe") {
		t.Run(strings.TrimPrefix(root, module+"/"), func(t *testing.T) {
			g := deps(t, root)
			for path, p := range g.pkgs {
				if path == root {
					continue
				}
				first, _, _ := strings.Cut(path, "/")
				if !p.Standard || strings.Contains(first, ".") || path == module || strings.HasPrefix(path, module+"/") {
					t.Errorf("%s must import only the standard library; import chain: %s", root, strings.Join(g.chain(path), " -> "))
				}
			}
		})
	}
}

// TestTestutilOnlyInTests: testutil, the test doubles and everything under
// test/ are for tests only; no package outside test/ may import them from
// non-test code, and nothing may import the API facts of test/fcspec from
// non-test code.
func TestTestutilOnlyInTests(t *testing.T) {
	// Test support packages: testutil and the doubles named *test
	// (dmsnaptest, jailtest, agenttest, ...). Code under test/ is test
	// support too (fakes, harnesses) and may use them.
	testOnly := func(path string) bool {
		last := path[strings.LastIndexByte(path, '/')+1:]
		return strings.HasPrefix(path, module+"/internal/") && (last == "testutil" || strings.HasSuffix(last, "test"))
	}
	// The Firecracker API facts (test/fcspec) are for _test.go files
	// only, even under test/: the fake firecracker must be held to them
	// by its tests, not built from them, or a wrong fact would agree with
	// itself.
	const facts = module + "/test/fcspec"
	for _, p := range goList(t, module+"/...") {
		for _, imp := range p.Imports {
			if imp == facts {
				t.Errorf("%s imports %s from non-test code", p.ImportPath, imp)
			}
		}
		if testOnly(p.ImportPath) || strings.HasPrefix(p.ImportPath, module+"/test/") {
			continue
		}
		for _, imp := range p.Imports {
			if testOnly(imp) || strings.HasPrefix(imp, module+"/test/") {
				t.Errorf("%s imports %s from non-test code", p.ImportPath, imp)
			}
		}
	}
}

// TestChainFindsShortestPath checks the helper on a hand-made graph, so a
// failure message of the rules above can be trusted.
func TestChainFindsShortestPath(t *testing.T) {
	g := &depGraph{root: "a", pkgs: map[string]listedPackage{
		"a": {ImportPath: "a", Imports: []string{"b", "c"}},
		"b": {ImportPath: "b", Imports: []string{"d"}},
		"c": {ImportPath: "c", Imports: []string{"e"}},
		"d": {ImportPath: "d", Imports: []string{"e"}},
		"e": {ImportPath: "e"},
	}}
	if got, want := strings.Join(g.chain("e"), " -> "), "a -> c -> e"; got != want {
		t.Errorf("chain(e) = %q, want %q", got, want)
	}
	if got := g.chain("zzz"); got != nil {
		t.Errorf("chain(zzz) = %v, want nil", got)
	}
}
