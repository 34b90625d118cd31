// Package version carries the build version, set by the Makefile with
// -ldflags "-X banger/internal/version.Version=... -X banger/internal/version.Commit=...".
package version

// Build metadata.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is "VERSION (commit COMMIT)".
func String() string { return Version + " (commit " + Commit + ")" }
