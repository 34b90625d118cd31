package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestEmbeddedCatalogParses(t *testing.T) {
	if _, err := Load(""); err != nil {
		t.Fatal(err)
	}
}

func TestParseAndResolve(t *testing.T) {
	text := `
[kernels.k61]
ref = "reg.example/banger/kernel@` + digest + `"
[images.debian-bookworm]
ref = "reg.example/banger/debian@` + digest + `"
kernel = "k61"
`
	p := filepath.Join(t.TempDir(), "catalog.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := c.Image("debian-bookworm"); !ok || e.Ref != "reg.example/banger/debian@"+digest || e.Kernel != "k61" {
		t.Errorf("Image = %+v, %v", e, ok)
	}
	if _, ok := c.Image("docker.io/library/alpine:3.20"); ok {
		t.Error("a full reference resolved as a short name")
	}
	if e, ok := c.Kernel("k61"); !ok || !strings.HasSuffix(e.Ref, digest) {
		t.Errorf("Kernel = %+v, %v", e, ok)
	}
}

func TestParseRefusesUnpinnedAndUnknown(t *testing.T) {
	for name, text := range map[string]string{
		"tag only":        "[images.a]\nref = \"reg.example/a:latest\"\n",
		"short digest":    "[images.a]\nref = \"reg.example/a@sha256:abc\"\n",
		"bad short name":  "[images.\"A B\"]\nref = \"reg.example/a@" + digest + "\"\n",
		"unknown key":     "[images.a]\nref = \"reg.example/a@" + digest + "\"\nmirror = \"x\"\n",
		"missing kernel":  "[images.a]\nref = \"reg.example/a@" + digest + "\"\nkernel = \"nope\"\n",
		"not toml at all": "images = [",
	} {
		if _, err := Parse(name, text); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
