package workspace

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"

	"banger/internal/textsafe"
)

// The exported patch is written by the guest, so it is hostile input: the
// checker below reads it as it streams past and refuses it outright when
// any file it touches is not a plain path inside the repository (absolute,
// "..", empty components, anything under a .git directory) or when it
// makes a symlink whose target leaves the repository. It accepts only what
// banger's own export produces (git diff --binary --full-index
// --no-renames): file diffs that start with "diff --git", the extended
// header lines git writes, hunks whose line counts add up, and binary
// patches. Anything else, including renames, copies and text between file
// diffs that git apply would read as another patch, is refused, so what is
// checked is what git apply sees.

// maxLine bounds a line the checker keeps (headers; hunk lines are only
// looked at by their first byte): names are at most PATH_MAX, four times
// that when every byte is quoted.
const maxLine = 64 << 10

// maxTarget bounds a symlink target (PATH_MAX).
const maxTarget = 4096

// PatchReport is what a patch that passed the checks does that the user
// should see before applying it.
type PatchReport struct {
	Files      int       // file diffs in the patch
	Executable []string  // files the patch makes executable
	AutoRun    []AutoRun // files that run on their own (see autoRunFiles)
}

// AutoRun is a changed file that some tool runs, or takes commands from,
// without being asked to.
type AutoRun struct {
	Path string
	Why  string
}

// PatchError is a refused patch: the line, the path concerned (if any)
// and why.
type PatchError struct {
	Line   int
	Path   string
	Reason string
}

func (e *PatchError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("patch refused at line %d: %s: %s", e.Line, textsafe.Line(strconv.Quote(e.Path)), e.Reason)
	}
	return fmt.Sprintf("patch refused at line %d: %s", e.Line, e.Reason)
}

type patchState int

const (
	stStart     patchState = iota // before the first file diff
	stHeader                      // in a file diff's extended header
	stHunk                        // in a hunk with lines left
	stAfterHunk                   // a hunk ended: another, or the next file
	stBinary                      // in a binary patch
)

// PatchChecker passes a patch through to an underlying writer while
// checking it; Close says whether it was acceptable. It keeps at most one
// header line (maxLine) and one symlink target in memory, however large
// the patch.
type PatchChecker struct {
	w      io.Writer
	state  patchState
	lineNo int
	buf    []byte // the current line, up to maxLine bytes
	long   bool   // the current line is longer than maxLine
	err    error
	f      *fileDiff
	report PatchReport
	// lines left in the current hunk, old and new side
	oldLeft, newLeft int64
}

// fileDiff is what the checker knows of the file diff being read.
type fileDiff struct {
	line     int
	gitName  string // from the diff --git line ("" when it cannot tell)
	oldName  string // from "--- " ("" for /dev/null or absent)
	newName  string // from "+++ "
	oldMode  string // "old mode"
	newMode  string // "new mode"
	newFile  string // "new file mode"
	deleted  string // "deleted file mode"
	index    string // the mode on the index line, if any
	hunks    int
	symlink  bool     // the result is a symlink: collect its target
	target   []string // the new side's lines of a symlink
	targetN  int
	noNL     bool // the last new-side line has no newline
	lastSide byte // '+', '-' or ' ' of the previous hunk line
}

// NewPatchChecker returns a checker writing the patch through to w.
func NewPatchChecker(w io.Writer) *PatchChecker { return &PatchChecker{w: w} }

// CheckPatch copies the patch from r to w, checking it on the way.
func CheckPatch(r io.Reader, w io.Writer) (*PatchReport, error) {
	c := NewPatchChecker(w)
	if _, err := io.Copy(c, r); err != nil {
		return nil, err
	}
	return c.Close()
}

// Write checks p and passes it on. After a refusal every Write fails with
// the refusal.
func (c *PatchChecker) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for rest := p; len(rest) > 0 && c.err == nil; {
		i := bytes.IndexByte(rest, '\n')
		chunk := rest
		if i >= 0 {
			chunk = rest[:i]
		}
		if room := maxLine - len(c.buf); len(chunk) > room {
			c.buf = append(c.buf, chunk[:room]...)
			c.long = true
		} else {
			c.buf = append(c.buf, chunk...)
		}
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		c.endLine()
	}
	if c.err != nil {
		return 0, c.err
	}
	if _, err := c.w.Write(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close checks the end of the patch and returns its report.
func (c *PatchChecker) Close() (*PatchReport, error) {
	if c.err == nil && (len(c.buf) > 0 || c.long) {
		c.endLine() // a last line without a newline
	}
	if c.err == nil {
		if c.state == stHunk {
			c.refuse("", "the patch ends inside a hunk")
		} else if c.f != nil {
			c.finishFile()
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	return &c.report, nil
}

func (c *PatchChecker) refuse(p, reason string) {
	if c.err == nil {
		c.err = &PatchError{Line: c.lineNo, Path: p, Reason: reason}
	}
}

func (c *PatchChecker) endLine() {
	c.lineNo++
	line, long := c.buf, c.long
	c.buf, c.long = c.buf[:0], false
	if c.state == stHunk {
		c.hunkLine(line, long)
		return
	}
	if long {
		c.refuse("", "header line longer than 64 KiB")
		return
	}
	s := string(line)
	if rest, ok := strings.CutPrefix(s, "diff --git "); ok {
		if c.f != nil {
			c.finishFile()
		}
		c.startFile(rest)
		return
	}
	switch c.state {
	case stStart:
		c.refuse("", "not a git diff (it must start with a \"diff --git\" line)")
	case stHeader:
		c.headerLine(s)
	case stAfterHunk:
		switch {
		case strings.HasPrefix(s, "@@ "):
			c.startHunk(s)
		case strings.HasPrefix(s, `\`):
			c.marker()
		default:
			c.refuse(c.f.name(), "unexpected line after a hunk")
		}
	case stBinary:
		if !binaryLine(s) {
			c.refuse(c.f.name(), "malformed binary patch")
		}
	}
}

func (c *PatchChecker) startFile(rest string) {
	c.f = &fileDiff{line: c.lineNo}
	c.state = stHeader
	c.report.Files++
	a, b, ok, err := splitGitHeader(rest)
	if err != nil {
		c.refuse("", "diff --git line: "+err.Error())
		return
	}
	if !ok {
		return // the ---/+++ lines must name it
	}
	for _, n := range []string{a, b} {
		if !c.checkName(n) {
			return
		}
	}
	c.f.gitName = stripPrefix(b)
}

// checkName checks a prefixed name ("a/x", "b/x") and reports whether it
// was accepted.
func (c *PatchChecker) checkName(n string) bool {
	p := stripPrefix(n)
	if !strings.Contains(n, "/") {
		c.refuse(n, "no a/ or b/ prefix")
		return false
	}
	if why := badPath(p); why != "" {
		c.refuse(p, why)
		return false
	}
	return true
}

var fileModes = map[string]bool{"100644": true, "100755": true, "120000": true, "160000": true}

func (c *PatchChecker) headerLine(s string) {
	f := c.f
	mode := func(dst *string, v string) {
		if !fileModes[v] {
			c.refuse(f.name(), fmt.Sprintf("file mode %q is not one git writes", v))
			return
		}
		*dst = v
	}
	switch {
	case strings.HasPrefix(s, "@@ "):
		c.endHeader()
		c.startHunk(s)
	case s == "GIT binary patch":
		c.endHeader()
		if f.symlink {
			c.refuse(f.name(), "a symlink given as a binary patch")
		}
		c.state = stBinary
	case strings.HasPrefix(s, "old mode "):
		mode(&f.oldMode, s[len("old mode "):])
	case strings.HasPrefix(s, "new mode "):
		mode(&f.newMode, s[len("new mode "):])
	case strings.HasPrefix(s, "new file mode "):
		mode(&f.newFile, s[len("new file mode "):])
	case strings.HasPrefix(s, "deleted file mode "):
		mode(&f.deleted, s[len("deleted file mode "):])
	case strings.HasPrefix(s, "index "):
		_, m, ok := strings.Cut(s[len("index "):], " ")
		if ok {
			mode(&f.index, m)
		}
	case strings.HasPrefix(s, "similarity index "), strings.HasPrefix(s, "dissimilarity index "):
	case strings.HasPrefix(s, "rename from "), strings.HasPrefix(s, "rename to "),
		strings.HasPrefix(s, "copy from "), strings.HasPrefix(s, "copy to "):
		_, n, _ := strings.Cut(s[len("rename "):], " ")
		if strings.HasPrefix(s, "copy ") {
			_, n, _ = strings.Cut(s[len("copy "):], " ")
		}
		c.refuse(unquoteOr(n), "renames and copies are refused (banger exports with --no-renames, so git did not write this)")
	case strings.HasPrefix(s, "--- "), strings.HasPrefix(s, "+++ "):
		n, err := headerName(s[4:])
		if err != nil {
			c.refuse("", err.Error())
			return
		}
		if n == "/dev/null" {
			return
		}
		if !c.checkName(n) {
			return
		}
		if s[0] == '-' {
			f.oldName = stripPrefix(n)
		} else {
			f.newName = stripPrefix(n)
		}
	default:
		c.refuse(f.name(), fmt.Sprintf("unexpected header line %s", textsafe.Line(strconv.Quote(truncate(s, 80)))))
	}
}

// endHeader decides what the file diff does once its header is read.
func (c *PatchChecker) endHeader() {
	f := c.f
	if f.name() == "" {
		c.refuse("", "a file diff whose name cannot be told")
		return
	}
	m := f.mode()
	if m == "" && f.deleted == "" {
		c.refuse(f.name(), "no file mode (git writes one for every file it changes)")
		return
	}
	if f.deleted != "" {
		return
	}
	if m == "120000" {
		if f.newFile == "" && f.index != "120000" {
			c.refuse(f.name(), "turns a file into a symlink (git writes that as a deletion and a new file)")
			return
		}
		f.symlink = true
	}
	if m == "100755" && (f.newFile != "" || (f.newMode != "" && f.oldMode != "100755")) {
		c.report.Executable = append(c.report.Executable, f.name())
	}
	if why := autoRunWhy(f.name()); why != "" {
		c.report.AutoRun = append(c.report.AutoRun, AutoRun{Path: f.name(), Why: why})
	}
}

func (c *PatchChecker) finishFile() {
	f := c.f
	if c.state == stHeader {
		c.endHeader()
	}
	if c.err != nil || !f.symlink {
		return
	}
	if f.hunks == 0 {
		if f.newFile != "" {
			c.refuse(f.name(), "a symlink with an empty target")
		}
		return
	}
	target := strings.Join(f.target, "\n")
	if !f.noNL {
		target += "\n"
	}
	if why := badTarget(f.name(), target); why != "" {
		c.refuse(f.name(), fmt.Sprintf("symlink to %s: %s", textsafe.Line(strconv.Quote(truncate(target, 200))), why))
	}
}

func (c *PatchChecker) startHunk(s string) {
	f := c.f
	oldN, newStart, newN, ok := parseHunkHeader(s)
	if !ok {
		c.refuse(f.name(), "malformed hunk header")
		return
	}
	f.hunks++
	if f.symlink && (f.hunks > 1 || newStart > 1) {
		// A symlink is one line: only a hunk over all of it says what
		// the target becomes.
		c.refuse(f.name(), "a symlink patched in part")
		return
	}
	c.oldLeft, c.newLeft = oldN, newN
	c.state = stHunk
	if oldN == 0 && newN == 0 {
		c.state = stAfterHunk
	}
}

func (c *PatchChecker) hunkLine(line []byte, long bool) {
	f := c.f
	side := byte(' ') // git apply reads an empty line as empty context
	if len(line) > 0 {
		side = line[0]
	}
	switch side {
	case ' ':
		c.oldLeft--
		c.newLeft--
	case '-':
		c.oldLeft--
	case '+':
		c.newLeft--
	case '\\':
		c.marker()
		return
	default:
		c.refuse(f.name(), "malformed hunk line")
		return
	}
	f.lastSide = side
	if f.symlink && side != '-' {
		if long || f.targetN+len(line) > maxTarget {
			c.refuse(f.name(), "symlink target longer than 4096 bytes")
			return
		}
		t := ""
		if len(line) > 0 {
			t = string(line[1:])
		}
		f.target = append(f.target, t)
		f.targetN += len(line)
	}
	if c.oldLeft < 0 || c.newLeft < 0 {
		c.refuse(f.name(), "hunk longer than its header says")
		return
	}
	if c.oldLeft == 0 && c.newLeft == 0 {
		c.state = stAfterHunk
	}
}

// marker handles "\ No newline at end of file", which is about the line
// before it.
func (c *PatchChecker) marker() {
	if c.f.lastSide != '-' {
		c.f.noNL = true
	}
}

// name is the path the file diff leaves in the repository.
func (f *fileDiff) name() string {
	if f == nil {
		return ""
	}
	switch {
	case f.newName != "":
		return f.newName
	case f.gitName != "":
		return f.gitName
	}
	return f.oldName
}

// mode is the file's mode after the patch, "" when the header gives none.
func (f *fileDiff) mode() string {
	switch {
	case f.newFile != "":
		return f.newFile
	case f.newMode != "":
		return f.newMode
	}
	return f.index
}

// parseHunkHeader reads "@@ -a[,b] +c[,d] @@...": the old line count, and
// the new side's start and count.
func parseHunkHeader(s string) (oldN, newStart, newN int64, ok bool) {
	rest, ok := strings.CutPrefix(s, "@@ -")
	if !ok {
		return 0, 0, 0, false
	}
	oldR, rest, ok := strings.Cut(rest, " +")
	if !ok {
		return 0, 0, 0, false
	}
	newR, _, ok := strings.Cut(rest, " @@")
	if !ok {
		return 0, 0, 0, false
	}
	_, oldN, ok1 := parseRange(oldR)
	newStart, newN, ok2 := parseRange(newR)
	return oldN, newStart, newN, ok1 && ok2
}

func parseRange(r string) (start, n int64, ok bool) {
	a, b, hasN := strings.Cut(r, ",")
	start, err := strconv.ParseInt(a, 10, 32)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	n = 1
	if hasN {
		if n, err = strconv.ParseInt(b, 10, 32); err != nil || n < 0 {
			return 0, 0, false
		}
	}
	return start, n, true
}

// binaryLine reports whether s can be part of a git binary patch: a
// "literal N" or "delta N" line, the blank line that ends a block, or a
// base85 data line (a length character, then base85).
func binaryLine(s string) bool {
	if s == "" {
		return true
	}
	for _, p := range []string{"literal ", "delta "} {
		if n, ok := strings.CutPrefix(s, p); ok {
			_, err := strconv.ParseUint(n, 10, 63)
			return err == nil
		}
	}
	if c := s[0]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isBase85(s[i]) {
			return false
		}
	}
	return true
}

func isBase85(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' ||
		strings.IndexByte("!#$%&()*+-;<=>?@^_`{|}~", c) >= 0
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
