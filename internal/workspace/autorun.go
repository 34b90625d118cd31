package workspace

import (
	"path"
	"strings"
)

// autoRunFiles are files that some tool runs, or takes commands from, on
// its own (on cd, on opening the folder, on push, on install, on build).
// A patch that changes one is not refused, since changing them is normal
// work, but the user is told before applying it. A pattern is a base name
// ("Makefile"), a "*." suffix, or a "dir/" whose contents all count; dir
// patterns match at any depth.
var autoRunFiles = []struct {
	pattern string
	why     string
}{
	{".envrc", "direnv runs it on cd"},
	{".vscode/tasks.json", "VS Code tasks, which can run when the folder opens"},
	{".vscode/settings.json", "VS Code settings, which name programs the editor runs"},
	{".vscode/launch.json", "VS Code launch configurations"},
	{".devcontainer/", "dev container configuration, which runs commands"},
	{".devcontainer.json", "dev container configuration, which runs commands"},
	{".github/workflows/", "GitHub Actions run it"},
	{".gitlab-ci.yml", "GitLab CI runs it"},
	{".husky/", "git hooks husky installs"},
	{".pre-commit-config.yaml", "pre-commit runs its hooks on commit"},
	{"Makefile", "make runs its recipes"},
	{"GNUmakefile", "make runs its recipes"},
	{"makefile", "make runs its recipes"},
	{"*.mk", "make includes it"},
	{"package.json", "npm runs its scripts, install hooks included"},
	{".yarnrc.yml", "yarn runs the yarnPath it names"},
	{"setup.py", "pip runs it on install"},
	{"pyproject.toml", "pip runs the build backend it names"},
	{"Cargo.toml", "cargo builds and runs its build script"},
	{"build.rs", "cargo runs it before building"},
	{"docker-compose.yml", "compose runs its services"},
	{"docker-compose.yaml", "compose runs its services"},
	{"compose.yml", "compose runs its services"},
	{"compose.yaml", "compose runs its services"},
}

// autoRunWhy says why p runs on its own, or "".
func autoRunWhy(p string) string {
	base := path.Base(p)
	for _, a := range autoRunFiles {
		switch {
		case strings.HasSuffix(a.pattern, "/"):
			if p2 := "/" + p; strings.Contains(p2, "/"+a.pattern) {
				return a.why
			}
		case strings.Contains(a.pattern, "/"):
			if p == a.pattern || strings.HasSuffix(p, "/"+a.pattern) {
				return a.why
			}
		case strings.HasPrefix(a.pattern, "*."):
			if strings.HasSuffix(base, a.pattern[1:]) {
				return a.why
			}
		case base == a.pattern:
			return a.why
		}
	}
	return ""
}
