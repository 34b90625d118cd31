package sidecarproto

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestSendRecvWithFiles(t *testing.T) {
	a, b, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := FromFile(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := FromFile(b)
	if err != nil {
		t.Fatal(err)
	}

	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := Message{Op: OpBoot, Seq: 7, Boot: &Boot{ID: "x", KernelFD: 0, InitrdFD: -1, ConsoleFD: -1}}
	if err := ca.Send(want, f); err != nil {
		t.Fatal(err)
	}
	got, files, err := cb.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got.Op != OpBoot || got.Seq != 7 || got.Boot == nil || got.Boot.ID != "x" || len(files) != 1 {
		t.Fatalf("got %+v with %d files", got, len(files))
	}
	buf := make([]byte, 5)
	if _, err := files[0].ReadAt(buf, 0); err != nil || string(buf) != "hello" {
		t.Fatalf("received file reads %q, %v", buf, err)
	}
	files[0].Close()

	// The peer closing its end reads as EOF.
	cb.Close()
	if _, _, err := ca.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after peer close = %v, want EOF", err)
	}
}

func TestFromFileRejectsOtherFDs(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromFile(f); err == nil {
		t.Fatal("FromFile accepted /dev/null")
	}
}
