package sshkeys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestEnsureOwnerKeyIsStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ssh", "id_ed25519")
	pub1, err := EnsureOwnerKey(path, "banger")
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode = %v, %v", st.Mode(), err)
	}
	pubLine, err := os.ReadFile(path + ".pub")
	if err != nil || !strings.HasPrefix(string(pubLine), "ssh-ed25519 ") {
		t.Fatalf("pub file = %q, %v", pubLine, err)
	}
	pub2, err := EnsureOwnerKey(path, "banger")
	if err != nil {
		t.Fatal(err)
	}
	if string(pub1.Marshal()) != string(pub2.Marshal()) {
		t.Fatal("second EnsureOwnerKey generated a new key")
	}
	data, _ := os.ReadFile(path)
	if _, err := ssh.ParsePrivateKey(data); err != nil {
		t.Fatalf("private key does not parse as OpenSSH: %v", err)
	}
}

func TestEnsureOwnerKeyRejectsRelativeAndGarbage(t *testing.T) {
	if _, err := EnsureOwnerKey("keys/id", ""); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative path: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureOwnerKey(bad, ""); err == nil {
		t.Fatal("garbage key accepted")
	}
	if data, _ := os.ReadFile(bad); string(data) != "not a key" {
		t.Fatal("existing file was overwritten")
	}
}

func TestKnownHostsRoundTrip(t *testing.T) {
	a, _ := Generate("a")
	b, _ := Generate("b")
	path := filepath.Join(t.TempDir(), "known_hosts")
	hosts := []Host{
		{Names: []string{"web", "web.vm", "172.16.0.3"}, Key: b.Public},
		{Names: []string{"dev", "dev.vm", "172.16.0.2"}, Key: a.Public},
	}
	if err := WriteKnownHosts(path, hosts); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "dev,dev.vm,172.16.0.2 ssh-ed25519 ") {
		t.Fatalf("known_hosts =\n%s", data)
	}
	// OpenSSH's own matching logic (via x/crypto's knownhosts) accepts the
	// right key for every name and rejects the other VM's key.
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dev:22", "dev.vm:22"} {
		if err := cb(name, fakeAddr{}, a.Public); err != nil {
			t.Errorf("%s with its key: %v", name, err)
		}
		if err := cb(name, fakeAddr{}, b.Public); err == nil {
			t.Errorf("%s accepted another VM's key", name)
		}
	}
	// Re-created under the same name with a new key: the file is rendered
	// anew, so the old key is gone.
	c, _ := Generate("c")
	hosts[1].Key = c.Public
	if err := WriteKnownHosts(path, hosts); err != nil {
		t.Fatal(err)
	}
	cb, _ = knownhosts.New(path)
	if err := cb("dev.vm:22", fakeAddr{}, c.Public); err != nil {
		t.Errorf("re-created vm key: %v", err)
	}
	if err := cb("dev.vm:22", fakeAddr{}, a.Public); err == nil {
		t.Error("old key still accepted after re-create")
	}
}

type fakeAddr struct{}

func (fakeAddr) Network() string { return "tcp" }
func (fakeAddr) String() string  { return "172.16.0.2:22" }
