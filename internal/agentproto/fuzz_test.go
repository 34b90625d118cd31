package agentproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
)

// frame builds a frame header declaring n payload bytes, followed by body.
func frame(typ byte, n uint32, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], n)
	return append(b, body...)
}

// FuzzReadFrame feeds ReadFrame, which reads what a guest sends on an exec
// stream, arbitrary bytes. It must not panic, must return a payload of at
// most MaxFrame bytes that is exactly what the header declared, and must
// consume the frame and nothing more.
func FuzzReadFrame(f *testing.F) {
	var ok bytes.Buffer
	_ = WriteFrame(&ok, FrameStdout, []byte("hello"))
	_ = WriteJSONFrame(&ok, FrameExit, Exit{Code: 3, Error: "no such file"})
	for _, seed := range [][]byte{
		ok.Bytes(),
		frame(FrameStderr, 0, ""),
		frame(FrameExit, 2, "{}"),
		frame(FrameStdout, MaxFrame, "short"),
		frame(FrameStdout, MaxFrame+1, ""),
		frame(FrameStdout, 0xffffffff, "x"),
		{FrameStdout, 0, 0},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		typ, payload, err := ReadFrame(r)
		consumed := len(in) - r.Len()
		if err != nil {
			if len(in) >= 5 {
				n := binary.BigEndian.Uint32(in[1:5])
				if n <= MaxFrame && len(in) >= 5+int(n) {
					t.Fatalf("a complete frame of %d bytes was refused: %v", n, err)
				}
			}
			return
		}
		if len(payload) > MaxFrame {
			t.Fatalf("payload of %d bytes, over MaxFrame", len(payload))
		}
		if consumed != 5+len(payload) {
			t.Fatalf("consumed %d bytes for a %d-byte payload", consumed, len(payload))
		}
		var again bytes.Buffer
		if err := WriteFrame(&again, typ, payload); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), in[:consumed]) {
			t.Fatalf("frame does not round-trip: %x vs %x", again.Bytes(), in[:consumed])
		}
	})
}

// FuzzReadReply feeds ReadJSONLine, which reads every reply line a guest
// sends, arbitrary bytes from a plain reader. It must not panic, must not
// read past the newline (what follows belongs to the stream), and must
// refuse a line over MaxLine.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		`{"ok":true,"version":1,"agent":"v","mode":"pid1","hostname":"h","kernel":"k"}` + "\nrest",
		`{"ok":true,"ports":[{"proto":"tcp","addr":"0.0.0.0","port":22,"pid":1,"process":"sshd"}],"truncated":true}` + "\n",
		`{"ok":false,"error":"\u001b[2Jboom"}` + "\n",
		`{"ok":true,"stats":{"mem_total":1,"filesystems":[{"path":"/","size":1}]}}` + "\n",
		`{"ok":true,"size":-1}` + "\n",
		"not json\n",
		`{"ok":tr`,
		"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var rep Reply
		err := ReadJSONLine(r, &rep)
		consumed := len(in) - r.Len()
		nl := bytes.IndexByte(in, '\n')
		if nl >= 0 && consumed > nl+1 {
			t.Fatalf("read %d bytes past the newline at %d", consumed-nl-1, nl)
		}
		if consumed > MaxLine+1 {
			t.Fatalf("read %d bytes for one line", consumed)
		}
		if err == nil && (nl < 0 || nl > MaxLine) {
			t.Fatalf("accepted a line without its newline or over MaxLine (newline at %d)", nl)
		}
	})
}

// scripted is a guest end for HostHandshake: reads come from in, writes
// are discarded.
type scripted struct{ in *bytes.Reader }

func (s scripted) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s scripted) Write(p []byte) (int, error) { return len(p), nil }

// FuzzHostHandshake feeds the host's side of the sync handshake arbitrary
// guest bytes. It must not panic, and must succeed only when the guest
// acknowledged this host's nonce and then said READY for it.
func FuzzHostHandshake(f *testing.F) {
	const nonce = "0123456789abcdef"
	for _, s := range []string{
		"BANGER-ACK " + nonce + "\nBANGER-READY " + nonce + "\n",
		"junk\x00\xffBANGER-ACK 0000000000000000\nBANGER-ACK " + nonce + "\nBANGER-ACK " + nonce + "\nBANGER-READY " + nonce + "\n",
		"BANGER-READY " + nonce + "\nBANGER-ACK " + nonce + "\n",
		strings.Repeat("x", 1000) + "BANGER-ACK " + nonce + "\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		err := HostHandshake(scripted{bytes.NewReader(in)}, nonce, time.Hour)
		// Whole lines only: the handshake compares complete lines.
		lines := bytes.Split(in, []byte("\n"))
		lines = lines[:len(lines)-1]
		ready, acked := -1, false
		for i, l := range lines {
			if !acked && string(l) == "BANGER-ACK "+nonce {
				acked = true
			} else if acked && string(l) == "BANGER-READY "+nonce {
				ready = i
				break
			}
		}
		if err == nil && ready < 0 {
			t.Fatalf("handshake succeeded on %q", in)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("handshake failed other than at the end of input: %v", err)
		}
	})
}

// A guest that declares a large frame and sends little makes the host
// allocate for what it sent, not for what it declared.
func TestReadFrameAllocatesForWhatArrives(t *testing.T) {
	// The bound: 64 KiB a read, twice over, for a frame that declares
	// MaxFrame and carries 16 bytes.
	const frameChunk = 64 << 10
	in := frame(FrameStdout, MaxFrame, "just a few bytes")
	const runs = 50
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		if _, _, err := ReadFrame(bytes.NewReader(in)); err == nil {
			t.Fatal("a short frame was accepted")
		}
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	if perRun > 2*frameChunk {
		t.Fatalf("a frame declaring %d bytes and carrying 16 cost %d bytes of allocation per read", MaxFrame, perRun)
	}
}
