package vm

import "testing"

func TestNameFromRef(t *testing.T) {
	for ref, want := range map[string]string{
		"docker.io/library/alpine:3.20":       "alpine-3-20",
		"alpine":                              "alpine",
		"alpine:latest":                       "alpine",
		"localhost:5000/team/App_Server:v1.2": "app-server-v1-2",
		"ghcr.io/o/tool@sha256:" + "ab":       "tool",
		"localhost:5000/x":                    "x",
	} {
		if got := NameFromRef(ref); got != want {
			t.Errorf("NameFromRef(%q) = %q, want %q", ref, got, want)
		}
	}
}
