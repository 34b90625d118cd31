package privop

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits shared by the validators.
const (
	MinMTU       = 576
	MaxMTU       = 9000
	MinPrefixLen = 8
	MaxPrefixLen = 30
	// ifNameMax is IFNAMSIZ minus the terminating NUL.
	ifNameMax = 15
	// maxListLen bounds every list in a request.
	maxListLen = 4096
	// MaxMirrorLen bounds a Debian mirror URL, in bytes.
	MaxMirrorLen = 512
)

var (
	bridgeRe = regexp.MustCompile(`^br-fc(-[a-z0-9]{1,9})?$`)
	tapRe    = regexp.MustCompile(`^tap-fc-[a-z0-9]{1,8}$`)
)

// privateRanges are the IPv4 ranges a guest network may use: RFC 1918 and
// the shared address space of RFC 6598.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// ValidBridgeName checks that name is one of banger's bridges: "br-fc" or
// "br-fc-" followed by 1 to 9 of [a-z0-9].
func ValidBridgeName(name string) error {
	if len(name) > ifNameMax || !bridgeRe.MatchString(name) {
		return fmt.Errorf("bridge %q: not a banger bridge name (want br-fc or br-fc-[a-z0-9]{1,9})", name)
	}
	return nil
}

// ValidTapName checks that name is a banger tap: "tap-fc-" followed by 1 to 8
// of [a-z0-9].
func ValidTapName(name string) error {
	if len(name) > ifNameMax || !tapRe.MatchString(name) {
		return fmt.Errorf("tap %q: not a banger tap name (want tap-fc-[a-z0-9]{1,8})", name)
	}
	return nil
}

// ValidSuite checks that suite is a Debian suite name such as "bookworm":
// a lowercase letter, then 1 to 31 of [a-z0-9-].
func ValidSuite(suite string) error {
	if !suiteRe.MatchString(suite) {
		return fmt.Errorf("suite %q: want a Debian suite name such as bookworm ([a-z][a-z0-9-]{1,31})", truncate(suite, 64))
	}
	return nil
}

// ValidMirror checks that mirror is an absolute http or https URL with a
// host, at most MaxMirrorLen bytes of valid UTF-8, without spaces or
// control characters.
func ValidMirror(mirror string) error {
	if len(mirror) > MaxMirrorLen {
		return fmt.Errorf("mirror: %d bytes, want at most %d", len(mirror), MaxMirrorLen)
	}
	if !utf8.ValidString(mirror) {
		return fmt.Errorf("mirror %q: not valid UTF-8", mirror)
	}
	if strings.IndexFunc(mirror, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return fmt.Errorf("mirror %q: contains a space or control character", mirror)
	}
	if !strings.HasPrefix(mirror, "http://") && !strings.HasPrefix(mirror, "https://") {
		return fmt.Errorf("mirror %q: want an http or https URL", mirror)
	}
	u, err := url.Parse(mirror)
	if err != nil {
		return fmt.Errorf("mirror %q: %w", mirror, err)
	}
	if u.Host == "" || u.User != nil {
		return fmt.Errorf("mirror %q: want an http(s) URL with a host and no user info", mirror)
	}
	return nil
}

// ValidMTU checks 576 <= mtu <= 9000.
func ValidMTU(mtu int) error {
	if mtu < MinMTU || mtu > MaxMTU {
		return fmt.Errorf("mtu %d: want %d..%d", mtu, MinMTU, MaxMTU)
	}
	return nil
}

// ValidPort checks 1 <= port <= 65535.
func ValidPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d: want 1..65535", port)
	}
	return nil
}

// ParsePrivatePrefix parses s as a canonical IPv4 prefix ("172.16.0.1/24")
// whose length is 8..30 and whose network lies inside a private range
// (RFC 1918 or 100.64.0.0/10).
func ParsePrivatePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prefix %q: %w", s, err)
	}
	if !p.Addr().Is4() || p.String() != s {
		return netip.Prefix{}, fmt.Errorf("prefix %q: want a canonical IPv4 prefix such as 172.16.0.1/24", s)
	}
	if p.Bits() < MinPrefixLen || p.Bits() > MaxPrefixLen {
		return netip.Prefix{}, fmt.Errorf("prefix %q: length %d out of range %d..%d", s, p.Bits(), MinPrefixLen, MaxPrefixLen)
	}
	if r := privateRangeOf(p.Addr()); r.IsValid() && p.Bits() >= r.Bits() {
		return p, nil
	}
	return netip.Prefix{}, fmt.Errorf("prefix %q: not inside a private range (%s)", s, privateRangesText)
}

// privateRangesText names privateRanges in error messages.
const privateRangesText = "10/8, 172.16/12, 192.168/16, 100.64/10"

// privateRangeOf returns the private range holding a, or the zero Prefix.
func privateRangeOf(a netip.Addr) netip.Prefix {
	for _, r := range privateRanges {
		if r.Contains(a) {
			return r
		}
	}
	return netip.Prefix{}
}

// ParsePrivateAddrPort parses s as a canonical IPv4 "addr:port"
// ("172.16.0.1:42069") whose port is 1..65535 and whose address is a
// unicast host address inside a private range (RFC 1918 or 100.64.0.0/10),
// not the first or last address of that range.
func ParsePrivateAddrPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	a := ap.Addr()
	if !a.Is4() || ap.String() != s {
		return netip.AddrPort{}, fmt.Errorf("address %q: want a canonical IPv4 addr:port such as 172.16.0.1:42069", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("address %q: port 0: want 1..65535", s)
	}
	r := privateRangeOf(a)
	if !r.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("address %q: not inside a private range (%s)", s, privateRangesText)
	}
	if err := hostInPrefix(a, r); err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	return ap, nil
}

// parseAddr4 parses a canonical IPv4 address.
func parseAddr4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q: %w", s, err)
	}
	if !a.Is4() || a.String() != s {
		return netip.Addr{}, fmt.Errorf("address %q: want a canonical IPv4 address", s)
	}
	return a, nil
}

// hostInPrefix checks that a is a usable host address of p: inside it and
// neither its network nor its broadcast address.
func hostInPrefix(a netip.Addr, p netip.Prefix) error {
	m := p.Masked()
	if !m.Contains(a) {
		return fmt.Errorf("address %s: outside %s", a, m)
	}
	if a == m.Addr() {
		return fmt.Errorf("address %s: is the network address of %s", a, m)
	}
	if a == lastAddr(m) {
		return fmt.Errorf("address %s: is the broadcast address of %s", a, m)
	}
	return nil
}

// lastAddr returns the highest address of the IPv4 prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ErrSymlink is wrapped by CheckPath when a component is a symbolic link.
var ErrSymlink = errors.New("symbolic link in path")

// CheckPath checks that p is a clean absolute path equal to or under one of
// roots (themselves clean and absolute), and walks it from "/" with Lstat,
// never following a link: an existing component that is a symlink is
// refused, and every existing component but the last must be a directory.
// The walk stops at the first component that does not exist, so p may name
// something still to be created; the caller must then create it without
// following links (O_NOFOLLOW, O_EXCL, mkdirat).
func CheckPath(roots []string, p string) error {
	if err := cleanAbs(p); err != nil {
		return err
	}
	under := false
	for _, r := range roots {
		if cleanAbs(r) != nil || r == "/" {
			return fmt.Errorf("root %q: want a clean absolute path other than /", r)
		}
		if p == r || strings.HasPrefix(p, r+"/") {
			under = true
			break
		}
	}
	if !under {
		return fmt.Errorf("path %q: not under a banger root %v", p, roots)
	}
	cur := "/"
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, part := range parts {
		if part == "" {
			continue // p == "/"
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check path %q: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("path %q: %s is a symbolic link: %w", p, cur, ErrSymlink)
		}
		if i < len(parts)-1 && !fi.IsDir() {
			return fmt.Errorf("path %q: %s is not a directory", p, cur)
		}
	}
	return nil
}

func cleanAbs(p string) error {
	if p == "" || strings.ContainsRune(p, 0) || !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("path %q: want a clean absolute path", p)
	}
	return nil
}
