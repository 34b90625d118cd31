package sshconfig

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInstallUninstallRestoresBytes(t *testing.T) {
	for _, orig := range []string{
		"",
		"Host github.com\n  User git\n",
		"# my config\nInclude ~/.ssh/other\n\nHost *\n  ServerAliveInterval 30\n",
		"no trailing newline",
	} {
		once, changed := Install(orig, "/home/u/.config/banger/ssh_config")
		if !changed || !strings.HasPrefix(once, BeginMarker+"\nInclude /home/u/.config/banger/ssh_config\n"+EndMarker+"\n") {
			t.Fatalf("Install(%q) = %q", orig, once)
		}
		twice, changed := Install(once, "/home/u/.config/banger/ssh_config")
		if changed || twice != once || strings.Count(twice, "Include /home/u/.config/banger/ssh_config") != 1 {
			t.Fatalf("second Install changed the file: %q", twice)
		}
		back, changed := Uninstall(twice)
		if !changed || back != orig {
			t.Fatalf("Uninstall = %q, want the original %q", back, orig)
		}
		if again, changed := Uninstall(back); changed || again != orig {
			t.Fatalf("second Uninstall changed the file: %q", again)
		}
	}
}

func TestRender(t *testing.T) {
	got := Render([]Host{{Name: "web", Addr: "172.16.0.3"}, {Name: "dev"}},
		Options{IdentityFile: "/s/ssh/id_ed25519", KnownHosts: "/s/ssh/known hosts", ProxyCommand: "banger vm ssh-proxy %n"})
	for _, want := range []string{
		"\nHost dev dev.vm\n  User root\n",
		"\nHost web web.vm\n  HostName 172.16.0.3\n",
		"  UserKnownHostsFile \"/s/ssh/known hosts\"\n",
		"  StrictHostKeyChecking yes\n",
		"  HostKeyAlias web.vm\n",
		"  ProxyCommand banger vm ssh-proxy %n\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "Host dev") > strings.Index(got, "Host web") {
		t.Error("hosts not sorted")
	}
}

// TestNoForwardingToGuests: a user whose own config forwards their agent
// and X11 to every host still forwards neither to a banger guest, as ssh
// itself resolves the config (ssh -G prints it without connecting).
func TestNoForwardingToGuests(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh client (scripts/deps.sh installs openssh-client)")
	}
	dir := t.TempDir()
	generated := filepath.Join(dir, "banger_ssh_config")
	body := Render([]Host{{Name: "web"}}, Options{IdentityFile: filepath.Join(dir, "id"), KnownHosts: filepath.Join(dir, "kh"), ProxyCommand: "banger vm ssh-proxy %n"})
	if err := os.WriteFile(generated, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	user, _ := Install("Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ForwardX11Trusted yes\n", generated)
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte(user), 0o600); err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{"web.vm": "no", "example.org": "yes"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "ssh", "-G", "-F", cfg, host).Output()
		cancel()
		if err != nil {
			t.Fatalf("ssh -G %s: %v", host, err)
		}
		for _, opt := range []string{"forwardagent", "forwardx11", "forwardx11trusted"} {
			if !strings.Contains(string(out), "\n"+opt+" "+want+"\n") {
				t.Errorf("ssh -G %s: %s is not %q", host, opt, want)
			}
		}
	}
}
