package paths

import (
	"os"
	"testing"
)

func TestForUser(t *testing.T) {
	tests := []struct {
		name                          string
		env                           map[string]string
		config, state, cache, runtime string
	}{
		{
			name:   "defaults",
			env:    nil,
			config: "/home/dev/.config/banger", state: "/home/dev/.local/state/banger",
			cache: "/home/dev/.cache/banger", runtime: "/tmp/banger-1000",
		},
		{
			name: "xdg",
			env: map[string]string{
				"XDG_CONFIG_HOME": "/c", "XDG_STATE_HOME": "/s", "XDG_CACHE_HOME": "/k", "XDG_RUNTIME_DIR": "/run/user/1000",
			},
			config: "/c/banger", state: "/s/banger", cache: "/k/banger", runtime: "/run/user/1000/banger",
		},
		{
			name:   "relative xdg ignored, tmpdir honoured",
			env:    map[string]string{"XDG_CONFIG_HOME": "rel", "XDG_RUNTIME_DIR": "rel", "TMPDIR": "/var/tmp"},
			config: "/home/dev/.config/banger", state: "/home/dev/.local/state/banger",
			cache: "/home/dev/.cache/banger", runtime: "/var/tmp/banger-1000",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := ForUser("/home/dev", 1000, tc.env)
			if l.ConfigDir != tc.config || l.StateDir != tc.state || l.CacheDir != tc.cache || l.RuntimeDir != tc.runtime {
				t.Errorf("ForUser = config %s state %s cache %s runtime %s", l.ConfigDir, l.StateDir, l.CacheDir, l.RuntimeDir)
			}
			if l.SocketPath != tc.runtime+"/bangerd.sock" {
				t.Errorf("SocketPath = %s", l.SocketPath)
			}
		})
	}
}

func TestFromEnvMatchesForUser(t *testing.T) {
	t.Setenv("HOME", "/home/x")
	t.Setenv("XDG_STATE_HOME", "/st")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", "")
	got, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := ForUser("/home/x", os.Getuid(), map[string]string{"XDG_STATE_HOME": "/st"})
	if got != want {
		t.Errorf("FromEnv = %+v, want %+v", got, want)
	}
}
