package vm

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestConsoleLogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	host, guest := net.Pipe()
	c, err := startConsoleLog(host, path)
	if err != nil {
		t.Fatal(err)
	}
	// A guest that prints far more than the bound: three limits' worth.
	line := bytes.Repeat([]byte("x"), 1023)
	line = append(line, '\n')
	total := 3 * consoleLogMax
	for written := 0; written < total; written += len(line) {
		if _, err := guest.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := guest.Write([]byte("last words\n")); err != nil {
		t.Fatal(err)
	}
	guest.Close()
	c.Close()

	var kept int64
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if st.Size() > consoleLogMax {
			t.Errorf("%s is %d bytes, over the %d bound", p, st.Size(), consoleLogMax)
		}
		kept += st.Size()
	}
	if kept > 2*consoleLogMax {
		t.Errorf("console keeps %d bytes, over twice the bound", kept)
	}
	all, err := readConsole(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(all, []byte("last words\n")) {
		t.Errorf("newest output lost: tail %q", all[max(0, len(all)-20):])
	}
}

// A log the VMM appends to itself is rotated in place: its content moves
// to .1 and the same file (the VMM's open O_APPEND fd) starts over empty.
func TestRotateInPlace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString("0123456789"); err != nil {
		t.Fatal(err)
	}
	rotateInPlace(p, 20)
	if got, _ := os.ReadFile(p); string(got) != "0123456789" {
		t.Fatalf("under the limit the log changed: %q", got)
	}
	rotateInPlace(p, 5)
	if _, err := w.WriteString("next"); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(p + ".1")
	cur, _ := os.ReadFile(p)
	if string(old) != "0123456789" || string(cur) != "next" {
		t.Fatalf("after rotation .1 = %q, log = %q", old, cur)
	}
}

// A log the VMM writes itself can grow far past the bound between two
// checks; reading it still returns at most the newest consoleLogMax bytes
// of each file.
func TestReadConsoleIsBounded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	big := bytes.Repeat([]byte("old line\n"), 3*consoleLogMax/9)
	if err := os.WriteFile(p+".1", big, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(append([]byte{}, big...), "newest\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	all, err := readConsole(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) > 2*consoleLogMax {
		t.Fatalf("read %d bytes of console, over twice the %d bound", len(all), consoleLogMax)
	}
	if !bytes.HasSuffix(all, []byte("old line\nnewest\n")) {
		t.Fatalf("newest output lost: tail %q", all[max(0, len(all)-20):])
	}
	if _, err := readConsole(filepath.Join(t.TempDir(), "none.log")); err != nil {
		t.Fatalf("a VM that never wrote its console: %v", err)
	}
}
