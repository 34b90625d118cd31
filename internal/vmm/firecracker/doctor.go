package firecracker

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"banger/internal/execx"
)

// Versions banger knows about: below the floor, distro kernels cannot find
// their devices (ACPI discovery came in 1.8); APIVersion is the release
// whose API the client, the test facts (test/fcspec) and the test doubles
// follow. No real binary of it runs in banger's tests.
const (
	FloorVersion = "1.8.0"
	APIVersion   = "1.16.1"
)

var (
	versionRe = regexp.MustCompile(`(?m)^Firecracker v(\d+)\.(\d+)\.(\d+)`)
	semverRe  = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)$`)
)

// ParseVersion extracts "X.Y.Z" from `firecracker --version` output.
func ParseVersion(out string) (string, bool) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return "", false
	}
	return m[1] + "." + m[2] + "." + m[3], true
}

// CompareVersions compares two "X.Y.Z" versions like strings.Compare.
func CompareVersions(a, b string) int {
	pa, pb := parts(a), parts(b)
	for i := range pa {
		switch {
		case pa[i] < pb[i]:
			return -1
		case pa[i] > pb[i]:
			return 1
		}
	}
	return 0
}

func parts(v string) [3]int {
	var out [3]int
	m := semverRe.FindStringSubmatch(v)
	if m == nil {
		return out
	}
	for i := range out {
		out[i], _ = strconv.Atoi(m[i+1])
	}
	return out
}

// Doctor reports on the firecracker setup: whether the binaries the
// install pinned are there and acceptable to the helper, and the version against the floor and the
// one whose API banger follows. Status is ok, warn or fail.
func (d *Driver) Doctor(ctx context.Context) (status, detail string) {
	if d.Off != "" {
		return "warn", d.Off
	}
	for _, b := range []struct{ what, path string }{{"firecracker", d.FirecrackerBin}, {"jailer", d.JailerBin}} {
		if err := CheckBinary(b.path); err != nil {
			return "warn", fmt.Sprintf("%s unusable (%v)", b.what, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := execx.Default.Run(ctx, d.FirecrackerBin, "--version")
	if err != nil {
		return "warn", fmt.Sprintf("%s --version: %v", d.FirecrackerBin, err)
	}
	v, ok := ParseVersion(string(out))
	if !ok {
		return "warn", fmt.Sprintf("%s --version printed no version", d.FirecrackerBin)
	}
	switch {
	case CompareVersions(v, FloorVersion) < 0:
		return "fail", fmt.Sprintf("v%s is older than the v%s banger needs (ACPI device discovery for distro kernels)", v, FloorVersion)
	case CompareVersions(v, APIVersion) != 0:
		return "ok", fmt.Sprintf("v%s with jailer %s (banger follows v%s's API)", v, d.JailerBin, APIVersion)
	}
	return "ok", fmt.Sprintf("v%s with jailer %s", v, d.JailerBin)
}
