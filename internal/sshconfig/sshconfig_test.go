package sshconfig

import (
	"strings"
	"testing"
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
