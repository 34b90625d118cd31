package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/sizes"
	"banger/internal/textsafe"
	"banger/internal/workspace"
)

// defaultExportMax bounds an exported patch unless --max-size says
// otherwise: the guest decides how much it sends, and it lands on the
// host's disk.
const defaultExportMax = 1 << 30

// exportRun runs the guest's export, writing its stdout and stderr, and
// returns its error (ExportError's, or the exec's).
type exportRun func(stdout io.Writer, stderr *guestOutput) error

// writeExport streams the guest's patch through the checker into a
// temporary file (beside output, or in the temp dir when output is
// stdout), so nothing of it is ever held in memory and nothing reaches
// output unless all of it passed: then the file is renamed to output, or
// copied to stdout. The guest's stderr is kept only up to
// maxGuestMessage, for the error. what starts its own errors. The report of what the patch makes
// executable or changes that runs on its own goes to diag.
func writeExport(what, output string, stdout, diag io.Writer, maxSize int64, run exportRun) (*workspace.PatchReport, error) {
	toStdout := output == "" || output == "-"
	dir := os.TempDir()
	if !toStdout {
		dir = filepath.Dir(output)
	}
	tmp, err := os.CreateTemp(dir, ".banger-export-*.patch")
	if err != nil {
		return nil, fmt.Errorf("%s: create the patch file: %w", what, err)
	}
	defer func() {
		tmp.Close()
		_ = os.Remove(tmp.Name()) // gone already after a rename
	}()
	lw := &limitWriter{w: tmp, left: maxSize}
	chk := workspace.NewPatchChecker(lw)
	stderr := newGuestOutput(maxGuestMessage)
	runErr := run(chk, stderr)
	rep, chkErr := chk.Close()
	switch {
	case lw.over:
		return nil, fmt.Errorf("%s: the patch is larger than %s; nothing was written (--max-size raises the limit)", what, sizes.Format(maxSize))
	case runErr != nil:
		return nil, runErr
	case chkErr != nil:
		var pe *workspace.PatchError
		if errors.As(chkErr, &pe) {
			return nil, fmt.Errorf("%s: %w; nothing was written", what, chkErr)
		}
		return nil, fmt.Errorf("%s: write the patch: %w", what, chkErr)
	}
	printPatchReport(diag, rep)
	if toStdout {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("%s: read the patch back: %w", what, err)
		}
		if _, err := io.Copy(stdout, tmp); err != nil {
			return nil, fmt.Errorf("%s: write the patch: %w", what, err)
		}
		return rep, nil
	}
	err = tmp.Chmod(0o644)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), output)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: write %s: %w", what, output, err)
	}
	return rep, nil
}

// printPatchReport tells the user, before they apply the patch, which
// files it makes executable and which files it changes that run on their
// own. Paths come from the guest: they are printed escaped.
func printPatchReport(w io.Writer, rep *workspace.PatchReport) {
	if len(rep.Executable) > 0 {
		fmt.Fprintf(w, "banger: the patch makes %d file(s) executable:\n", len(rep.Executable))
		for _, p := range rep.Executable {
			fmt.Fprintf(w, "  %s\n", textsafe.Line(p))
		}
	}
	if len(rep.AutoRun) > 0 {
		fmt.Fprintf(w, "banger: the patch changes %d file(s) that run on their own; review them before applying:\n", len(rep.AutoRun))
		for _, a := range rep.AutoRun {
			fmt.Fprintf(w, "  %s (%s)\n", textsafe.Line(a.Path), a.Why)
		}
	}
}

// limitWriter passes up to left bytes to w; past that it fails, and
// remembers that it did.
type limitWriter struct {
	w    io.Writer
	left int64
	over bool
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.over = true
		return 0, errors.New("patch too large")
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}
