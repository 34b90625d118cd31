package installmeta

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() Meta {
	return Meta{
		OwnerUser: "dev", OwnerUID: 1000, OwnerGID: 1000, OwnerHome: "/home/dev",
		Version: "v0.1.0", Commit: "abc1234",
		InstalledAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etc", "install.toml")
	if err := Write(p, sample()); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != sample() {
		t.Errorf("round trip: got %+v, want %+v", got, sample())
	}
	data, _ := os.ReadFile(p)
	for _, k := range []string{"owner_user", "owner_uid", "owner_gid", "owner_home", "version", "commit", "installed_at"} {
		if !strings.Contains(string(data), k+" = ") {
			t.Errorf("written file lacks key %s:\n%s", k, data)
		}
	}
	if _, err := ReadTrusted(p); err != nil {
		t.Errorf("ReadTrusted of a file we wrote: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	tests := map[string]string{
		"unknown key":    "owner_user = \"dev\"\nowner_uid = 1000\nowner_gid = 1000\nowner_home = \"/home/dev\"\nsudo = true\n",
		"root owner":     "owner_user = \"root\"\nowner_uid = 0\nowner_gid = 0\nowner_home = \"/root\"\n",
		"missing uid":    "owner_user = \"dev\"\nowner_gid = 1000\nowner_home = \"/home/dev\"\n",
		"relative home":  "owner_user = \"dev\"\nowner_uid = 1000\nowner_gid = 1000\nowner_home = \"home/dev\"\n",
		"uid as string":  "owner_user = \"dev\"\nowner_uid = \"1000\"\nowner_gid = 1000\nowner_home = \"/home/dev\"\n",
		"not toml":       "owner_user = \n",
		"negative gid":   "owner_user = \"dev\"\nowner_uid = 1000\nowner_gid = -1\nowner_home = \"/home/dev\"\n",
		"slash in owner": "owner_user = \"a/b\"\nowner_uid = 1000\nowner_gid = 1000\nowner_home = \"/home/dev\"\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if m, err := Parse([]byte(in)); err == nil {
				t.Errorf("Parse accepted %q as %+v", in, m)
			}
		})
	}
}

func TestReadTrustedRefusesWritableAndSymlink(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "install.toml")
	if err := Write(p, sample()); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.toml")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTrusted(link); !errors.Is(err, ErrUntrusted) {
		t.Errorf("ReadTrusted(symlink) = %v, want ErrUntrusted", err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTrusted(p); !errors.Is(err, ErrUntrusted) {
		t.Errorf("ReadTrusted(0666) = %v, want ErrUntrusted", err)
	}
}
