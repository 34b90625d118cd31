package workspace

import (
	"errors"
	"path"
	"strings"
)

// Names in a git patch: how git writes them, and which are refused.

// unquote reads a name git quoted C-style ("a/tab\there", "\303\251"):
// s must start with a quote; it returns the name and what follows the
// closing quote.
func unquote(s string) (name, rest string, err error) {
	if !strings.HasPrefix(s, `"`) {
		return "", "", errors.New("not a quoted name")
	}
	var b []byte
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return string(b), s[i+1:], nil
		case '\\':
			i++
			if i >= len(s) {
				return "", "", errors.New("quoted name ends in a backslash")
			}
			switch e := s[i]; e {
			case 'a':
				b = append(b, '\a')
			case 'b':
				b = append(b, '\b')
			case 't':
				b = append(b, '\t')
			case 'n':
				b = append(b, '\n')
			case 'v':
				b = append(b, '\v')
			case 'f':
				b = append(b, '\f')
			case 'r':
				b = append(b, '\r')
			case '"', '\\':
				b = append(b, e)
			case '0', '1', '2', '3':
				if i+2 >= len(s) || !isOctal(s[i+1]) || !isOctal(s[i+2]) {
					return "", "", errors.New("bad octal escape in a quoted name")
				}
				b = append(b, (e-'0')<<6|(s[i+1]-'0')<<3|(s[i+2]-'0'))
				i += 2
			default:
				return "", "", errors.New("unknown escape in a quoted name")
			}
		default:
			b = append(b, c)
		}
	}
	return "", "", errors.New("quoted name without its closing quote")
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// unquoteOr unquotes s if it is quoted, for messages.
func unquoteOr(s string) string {
	if n, rest, err := unquote(s); err == nil && rest == "" {
		return n
	}
	return s
}

// headerName reads the name of a "--- " or "+++ " line: quoted, or up to
// a tab, as git apply reads it.
func headerName(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		n, rest, err := unquote(s)
		if err != nil {
			return "", err
		}
		if rest != "" && !strings.HasPrefix(rest, "\t") {
			return "", errors.New("text after a quoted name")
		}
		return n, nil
	}
	n, _, _ := strings.Cut(s, "\t")
	return n, nil
}

// splitGitHeader reads the two names of "diff --git A B". Unquoted names
// may hold spaces, so, as git does, the split is where both names are the
// same after their prefix; ok is false when there is no such split (the
// ---/+++ lines must then name the file).
func splitGitHeader(s string) (a, b string, ok bool, err error) {
	if strings.HasPrefix(s, `"`) {
		a, rest, err := unquote(s)
		if err != nil {
			return "", "", false, err
		}
		rest, found := strings.CutPrefix(rest, " ")
		if !found {
			return "", "", false, errors.New("no second name")
		}
		b, err := wholeName(rest)
		return a, b, err == nil, err
	}
	// An unquoted first name, and a quoted second one?
	for i := strings.Index(s, ` "`); i >= 0; {
		if b, err := wholeName(s[i+1:]); err == nil {
			return s[:i], b, true, nil
		}
		j := strings.Index(s[i+1:], ` "`)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	// Linear however hostile the line: the first name's prefix ends at
	// the first slash, the second's at the first slash after the space.
	first := strings.IndexByte(s, '/')
	if first < 0 {
		return "", "", false, nil
	}
	next := first
	for i := first + 1; i < len(s); i++ {
		if s[i] != ' ' {
			continue
		}
		for next >= 0 && next <= i {
			j := strings.IndexByte(s[next+1:], '/')
			if j < 0 {
				next = -1
				break
			}
			next += 1 + j
		}
		if next < 0 {
			break
		}
		if s[first+1:i] == s[next+1:] && !strings.Contains(s[i+1:next], " ") {
			return s[:i], s[i+1:], true, nil
		}
	}
	return "", "", false, nil
}

// wholeName is s as a name: unquoted entirely if quoted, else as is.
func wholeName(s string) (string, error) {
	if !strings.HasPrefix(s, `"`) {
		return s, nil
	}
	n, rest, err := unquote(s)
	if err == nil && rest != "" {
		err = errors.New("text after a quoted name")
	}
	return n, err
}

// stripPrefix drops the first component ("a/", "b/"), as git apply -p1
// does.
func stripPrefix(n string) string {
	if i := strings.IndexByte(n, '/'); i >= 0 {
		return n[i+1:]
	}
	return n
}

// badPath says why p, a path in the repository, is refused, or "". Only
// plain relative paths are accepted: git never writes anything else, and
// git apply's own checks differ between versions.
func badPath(p string) string {
	switch {
	case p == "":
		return "empty path"
	case strings.HasPrefix(p, "/"):
		return "absolute path"
	case strings.ContainsRune(p, 0):
		return "NUL in path"
	}
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == "":
			return "empty path component"
		case c == "." || c == "..":
			return "\".\" or \"..\" component"
		case isGitName(c):
			return "inside a .git directory"
		}
	}
	return ""
}

// isGitName reports whether a path component names a git directory on some
// file system the repository could live on: any case, trailing dots or
// spaces (Windows drops them), or the 8.3 short name.
func isGitName(c string) bool {
	t := strings.TrimRight(c, ". ")
	return strings.EqualFold(t, ".git") || strings.EqualFold(c, "git~1")
}

// badTarget says why a symlink at link with this target would point
// outside the repository (or into a .git directory), or "". The target may
// only climb ("..") at its start, and not above the repository; after a
// name it may only descend, since a symlink among those names (including
// one this patch makes) could send a later ".." anywhere.
func badTarget(link, target string) string {
	switch {
	case target == "" || target == "\n":
		return "empty target"
	case strings.HasPrefix(target, "/"):
		return "absolute target"
	case strings.ContainsRune(target, 0):
		return "NUL in target"
	}
	depth := strings.Count(path.Clean(link), "/")
	named := false
	for _, c := range strings.Split(target, "/") {
		switch {
		case c == "" || c == ".":
		case c == "..":
			if named {
				return "\"..\" after a name (a symlink on the way could lead anywhere)"
			}
			if depth--; depth < 0 {
				return "points outside the repository"
			}
		case isGitName(c):
			return "points into a .git directory"
		default:
			named = true
		}
	}
	return ""
}
