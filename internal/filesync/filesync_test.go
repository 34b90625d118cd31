package filesync

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		e  Entry
		ok bool
	}{
		{Entry{Host: "~/.gitconfig", Guest: "~/.gitconfig"}, true},
		{Entry{Host: "/home/u/x", Guest: "/root/x", Mode: "0644"}, true},
		{Entry{Host: "", Guest: "~/x"}, false},
		{Entry{Host: "~/x", Guest: ""}, false},
		{Entry{Host: "rel/x", Guest: "~/x"}, false},
		{Entry{Host: "~/x", Guest: "/etc/x"}, false},
		{Entry{Host: "~/../x", Guest: "~/x"}, false},
		{Entry{Host: "~/x", Guest: "/root/../etc/x"}, false},
		{Entry{Host: "~bob/x", Guest: "~/x"}, false},
		{Entry{Host: "~/x", Guest: "~/x", Mode: "rwx"}, false},
		{Entry{Host: "~/x", Guest: "~/x", Mode: "99"}, false},
	} {
		if err := tc.e.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.e, err, tc.ok)
		}
	}
}

func TestResolveStaysInHome(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, "home")
	outside := filepath.Join(root, "secret.txt")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(home, "dots", "sub"), 0o755))
	must(os.WriteFile(outside, []byte("do not read"), 0o600))
	must(os.WriteFile(filepath.Join(home, "gitconfig"), []byte("[user]\n"), 0o644))
	must(os.WriteFile(filepath.Join(home, "dots", "a"), []byte("a"), 0o640))
	must(os.WriteFile(filepath.Join(home, "dots", "sub", "b"), []byte("b"), 0o600))
	must(os.Symlink("a", filepath.Join(home, "dots", "inside-link")))
	must(os.Symlink(outside, filepath.Join(home, "dots", "escape")))
	must(os.Symlink(outside, filepath.Join(home, "escape-file")))

	files, warns, err := Resolve(Entry{Host: "~/gitconfig", Guest: "~/.gitconfig"}, home)
	if err != nil || len(files) != 1 || files[0].Guest != "/root/.gitconfig" || files[0].Mode != 0o600 || string(files[0].Data) != "[user]\n" || len(warns) != 0 {
		t.Fatalf("single file = %+v %v %v", files, warns, err)
	}
	files, _, err = Resolve(Entry{Host: "~/gitconfig", Guest: "~/.gitconfig", Mode: "0644"}, home)
	if err != nil || files[0].Mode != 0o644 {
		t.Fatalf("mode = %+v %v", files, err)
	}

	files, warns, err = Resolve(Entry{Host: "~/dots", Guest: "/root/dots"}, home)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		if strings.Contains(string(f.Data), "do not read") {
			t.Fatalf("read a file outside home through %s", f.Guest)
		}
		got = append(got, f.Guest)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "/root/dots/a /root/dots/inside-link /root/dots/sub/b" {
		t.Fatalf("dir files = %v", got)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "escape") {
		t.Fatalf("warnings = %v", warns)
	}

	if _, _, err := Resolve(Entry{Host: "~/escape-file", Guest: "~/x"}, home); err == nil || !strings.Contains(err.Error(), "outside your home") {
		t.Fatalf("symlink out of home: %v", err)
	}
	if _, _, err := Resolve(Entry{Host: outside, Guest: "~/x"}, home); err == nil {
		t.Fatal("absolute path outside home accepted")
	}
	if _, warns, err := Resolve(Entry{Host: "~/missing", Guest: "~/x"}, home); err != nil || len(warns) != 1 {
		t.Fatalf("missing host path = %v, %v; want one warning", warns, err)
	}
}
