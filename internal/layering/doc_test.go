package layering

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// docPrefix is how the package comment of p must start: "Package name " for
// a library, "Command dir " for a main package (dir being the binary name).
func docPrefix(p listedPackage) string {
	if p.Name == "main" {
		return "Command " + filepath.Base(p.Dir) + " "
	}
	return "Package " + p.Name + " "
}

// TestEveryPackageIsDocumented requires a package comment, attached to the
// package clause of at least one non-test file, in every package under
// internal/ and cmd/. Packages made only of tests are exempt.
func TestEveryPackageIsDocumented(t *testing.T) {
	checked := 0
	for _, p := range goList(t, module+"/internal/...", module+"/cmd/...") {
		files := append(append([]string(nil), p.GoFiles...), p.CgoFiles...)
		if len(files) == 0 {
			continue
		}
		checked++
		want := docPrefix(p)
		ok := false
		var others []string // package comments that do not start as they should
		fset := token.NewFileSet()
		for _, name := range files {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Errorf("%s: parse %s: %v", p.ImportPath, name, err)
				continue
			}
			if f.Doc == nil {
				continue
			}
			doc := f.Doc.Text()
			if strings.HasPrefix(doc, want) {
				ok = true
				break
			}
			first, _, _ := strings.Cut(doc, "\n")
			others = append(others, name+": "+first)
		}
		switch {
		case ok:
		case len(others) == 0:
			t.Errorf("%s has no package comment; add one starting %q to one of %v", p.ImportPath, want, files)
		default:
			t.Errorf("%s: package comment must start %q, found %q", p.ImportPath, want, others)
		}
	}
	if checked == 0 {
		t.Fatal("no package checked: go list found nothing under internal/ and cmd/")
	}
}
