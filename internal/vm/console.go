package vm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// consoleLogMax bounds console.log; at the limit it becomes console.log.1
// (replacing the previous one), so a chatty or hostile guest can use at most
// twice this much of the owner's disk.
const consoleLogMax = 4 << 20

// consoleLog copies a VM's serial console into a bounded log file.
type consoleLog struct {
	path string
	conn net.Conn

	mu   sync.Mutex
	f    *os.File
	size int64
	done chan struct{}
	stop chan struct{} // without conn: ends the bounding loop
}

// consoleCheck is how often a console log written by the VMM itself is
// checked against consoleLogMax.
const consoleCheck = 2 * time.Second

// boundConsoleLog keeps a console log that the VMM appends to itself
// (O_APPEND) within bounds: past consoleLogMax its content moves to
// console.log.1 and the file is truncated in place, so the VMM's next
// write lands at the new, empty end.
func boundConsoleLog(path string) *consoleLog {
	c := &consoleLog{path: path, done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTicker(consoleCheck)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				rotateInPlace(path, consoleLogMax)
			}
		}
	}()
	return c
}

// rotateInPlace copies the log to .1 as a stream: between two checks a
// guest may have written far past the limit, and none of it is held in
// memory.
func rotateInPlace(path string, limit int64) {
	src, err := os.Open(path)
	if err != nil {
		return
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil || st.Size() <= limit {
		return
	}
	dst, err := os.OpenFile(path+".1", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	_, err = io.Copy(dst, io.NewSectionReader(src, 0, st.Size()))
	if cerr := dst.Close(); err != nil || cerr != nil {
		return
	}
	_ = os.Truncate(path, 0)
}

func startConsoleLog(conn net.Conn, path string) (*consoleLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		conn.Close()
		return nil, err
	}
	st, _ := f.Stat()
	c := &consoleLog{path: path, conn: conn, f: f, size: st.Size(), done: make(chan struct{})}
	go c.pump()
	return c, nil
}

func (c *consoleLog) pump() {
	defer close(c.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.conn.Read(buf)
		if n > 0 {
			c.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (c *consoleLog) write(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return
	}
	if c.size+int64(len(b)) > consoleLogMax {
		c.f.Close()
		_ = os.Rename(c.path, c.path+".1")
		f, err := os.OpenFile(c.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			c.f = nil
			return
		}
		c.f, c.size = f, 0
	}
	n, _ := c.f.Write(b)
	c.size += int64(n)
}

// Close stops copying (the VM keeps running) and waits for the pump.
func (c *consoleLog) Close() {
	if c == nil {
		return
	}
	if c.conn != nil {
		c.conn.Close()
	} else {
		close(c.stop)
	}
	<-c.done
	c.mu.Lock()
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
	c.mu.Unlock()
}

// readConsole returns the retained console output, oldest first: the
// newest consoleLogMax bytes of each file. A log the VMM writes itself can
// outgrow the bound between two checks, so the bound is on the read.
func readConsole(path string) ([]byte, error) {
	old, err := readTail(path+".1", consoleLogMax)
	if err != nil {
		return nil, err
	}
	cur, err := readTail(path, consoleLogMax)
	if err != nil {
		return nil, err
	}
	return append(old, cur...), nil
}

// readTail reads the last limit bytes of path; a missing file reads empty.
func readTail(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read console: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read console: %w", err)
	}
	off := st.Size() - limit
	if off < 0 {
		off = 0
	}
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, off, limit), limit))
	if err != nil {
		return nil, fmt.Errorf("read console: %w", err)
	}
	return b, nil
}
