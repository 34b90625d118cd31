package agentproto

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"time"
)

// The sync handshake makes a stream usable even when stale bytes from an
// earlier host connection are still queued in the guest's port (a
// virtio-serial port outlives host connections; a restarted bangerd reconnects
// to the same port). Each line is at most 64 bytes:
//
//	host  -> guest  "BANGER-SYNC <nonce>\n"   nonce: 16 lowercase hex digits
//	guest -> host   "BANGER-ACK <nonce>\n"    for every SYNC it reads
//	host  -> guest  "BANGER-GO <nonce>\n"     after the ACK of its own nonce
//	guest -> host   "BANGER-READY <nonce>\n"  last line before the session
//
// The host may repeat SYNC until it sees its ACK (the guest may not have
// opened its port yet, and a port that is not open can drop bytes). The guest
// discards everything that is not a SYNC or GO line while syncing, and starts
// the yamux server right after answering GO with READY. The host discards
// every line until the ACK of its own nonce, and then every line until READY:
// ACKs of repeated SYNCs may come in between. A host that sees nothing in
// time closes the stream and opens a new one.

var (
	syncRe = regexp.MustCompile(`^BANGER-SYNC ([0-9a-f]{16})$`)
	goRe   = regexp.MustCompile(`^BANGER-GO ([0-9a-f]{16})$`)
)

const maxHandshakeLine = 64

// NewNonce returns a fresh handshake nonce.
func NewNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// HostHandshake runs the host side on rw, repeating SYNC every resend
// until the guest answers. The caller bounds it with a deadline on the
// underlying connection (which also ends the resend loop through a write
// error). On success the stream is positioned at the start of the yamux
// session.
func HostHandshake(rw io.ReadWriter, nonce string, resend time.Duration) error {
	sync := []byte("BANGER-SYNC " + nonce + "\n")
	if _, err := rw.Write(sync); err != nil {
		return fmt.Errorf("send sync: %w", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(resend)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := rw.Write(sync); err != nil {
					return
				}
			}
		}
	}()
	err := readUntil(rw, []byte("BANGER-ACK "+nonce))
	close(stop)
	<-done
	if err != nil {
		return fmt.Errorf("wait for ack: %w", err)
	}
	if _, err := fmt.Fprintf(rw, "BANGER-GO %s\n", nonce); err != nil {
		return fmt.Errorf("send go: %w", err)
	}
	if err := readUntil(rw, []byte("BANGER-READY "+nonce)); err != nil {
		return fmt.Errorf("wait for ready: %w", err)
	}
	return nil
}

func readUntil(r io.Reader, want []byte) error {
	for {
		line, err := readLoose(r)
		if err != nil {
			return err
		}
		if bytes.Equal(line, want) {
			return nil
		}
	}
}

// GuestHandshake runs the guest side on rw: it answers SYNC lines until it
// reads a GO line. The returned reader must be used for the session, since
// it may hold bytes read past the GO line.
func GuestHandshake(rw io.ReadWriter) (*bufio.Reader, error) {
	br := bufio.NewReaderSize(rw, 4096)
	for {
		line, err := readLoose(br)
		if err != nil {
			return nil, err
		}
		if m := syncRe.FindSubmatch(line); m != nil {
			if _, err := fmt.Fprintf(rw, "BANGER-ACK %s\n", m[1]); err != nil {
				return nil, fmt.Errorf("send ack: %w", err)
			}
			continue
		}
		if m := goRe.FindSubmatch(line); m != nil {
			if _, err := fmt.Fprintf(rw, "BANGER-READY %s\n", m[1]); err != nil {
				return nil, fmt.Errorf("send ready: %w", err)
			}
			return br, nil
		}
	}
}

// readLoose reads one newline-terminated line, keeping only the last
// maxHandshakeLine bytes so that garbage of any length is skipped.
func readLoose(r io.Reader) ([]byte, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return line, nil
			}
			line = append(line, b[0])
			if len(line) > maxHandshakeLine {
				line = line[len(line)-maxHandshakeLine:]
			}
		}
		if err != nil {
			return nil, err
		}
	}
}
