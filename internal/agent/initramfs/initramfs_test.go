package initramfs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func mkroot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, link := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if link != "" {
			err = os.Symlink(link, p)
		} else {
			err = os.WriteFile(p, nil, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestChooseInit(t *testing.T) {
	// Debian: /sbin/init is an absolute symlink that only resolves inside
	// the new root.
	systemd := mkroot(t, map[string]string{"lib/systemd/systemd": "", "sbin/init": "/lib/systemd/systemd"})
	busybox := mkroot(t, map[string]string{"bin/busybox": "", "sbin/init": "/bin/busybox"})
	cases := []struct {
		root, explicit string
		want           NextInit
		fail           bool
	}{
		{systemd, "", NextInit{Argv: []string{"/sbin/init"}, Systemd: true}, false},
		{busybox, "", NextInit{Argv: []string{AgentPath, "pid1"}}, false},
		{busybox, "/sbin/init", NextInit{Argv: []string{"/sbin/init"}}, false},
		{busybox, "/nope", NextInit{}, true},
	}
	for _, c := range cases {
		got, err := ChooseInit(c.root, c.explicit)
		if (err != nil) != c.fail || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ChooseInit(%s, %q) = %+v, %v; want %+v", c.root, c.explicit, got, err, c.want)
		}
	}
}

func TestInstallUnit(t *testing.T) {
	root := t.TempDir()
	for i := 0; i < 2; i++ { // idempotent
		if err := InstallUnit(root); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "run", "systemd", "system")
	b, err := os.ReadFile(filepath.Join(dir, WantedBy+".wants", UnitName))
	if err != nil {
		t.Fatalf("unit not reachable through the wants link: %v", err)
	}
	for _, want := range []string{"ExecStart=" + AgentPath + " serve", "Restart=always", "DefaultDependencies=no"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q:\n%s", want, b)
		}
	}
}
