package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Log levels, most severe first.
const (
	levelOff = iota
	levelError
	levelWarning
	levelInfo
	levelDebug
	levelTrace
)

var levelNames = []string{"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"}

// parseLevel reads a logger level; Firecracker matches it case-insensitively.
func parseLevel(s string) (int, bool) {
	switch strings.ToLower(s) {
	case "off":
		return levelOff, true
	case "error":
		return levelError, true
	case "warning", "warn":
		return levelWarning, true
	case "info":
		return levelInfo, true
	case "debug":
		return levelDebug, true
	case "trace":
		return levelTrace, true
	}
	return 0, false
}

// fcLogger writes Firecracker-style log lines: until configured to stdout,
// then to the log file or FIFO given by --log-path or PUT /logger.
type fcLogger struct {
	mu         sync.Mutex
	id         string
	w          io.Writer
	level      int
	showLevel  bool
	showOrigin bool
}

func (l *fcLogger) configure(w io.Writer, level int, showLevel, showOrigin bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w, l.level, l.showLevel, l.showOrigin = w, level, showLevel, showOrigin
}

func (l *fcLogger) logf(level int, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if level > l.level || l.w == nil {
		return
	}
	tag := l.id + ":fc_api"
	if l.showLevel {
		tag += ":" + levelNames[level]
	}
	if l.showOrigin {
		tag += ":fake-firecracker"
	}
	ts := time.Now().UTC().Format("2006-01-02T15:04:05.000000000")
	// Write errors are ignored like Firecracker does: a full FIFO or a
	// closed stdout must not stop the VMM.
	_, _ = fmt.Fprintf(l.w, "%s [%s] %s\n", ts, tag, fmt.Sprintf(format, args...))
}

func (l *fcLogger) infof(format string, args ...any)  { l.logf(levelInfo, format, args...) }
func (l *fcLogger) errorf(format string, args ...any) { l.logf(levelError, format, args...) }

// openSink opens an existing log or metrics file or FIFO like Firecracker:
// read-write (so a FIFO open does not block), non-blocking, never created.
func openSink(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_APPEND|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// metricsSink writes one JSON object per line: on FlushMetrics, every 60
// seconds once configured, and at exit.
type metricsSink struct {
	mu    sync.Mutex
	f     *os.File
	m     *machine
	start time.Time
}

func newMetricsSink(f *os.File, m *machine) *metricsSink {
	s := &metricsSink{f: f, m: m, start: time.Now()}
	go func() {
		for range time.Tick(60 * time.Second) {
			_ = s.flush()
		}
	}()
	return s
}

// flush writes the current counters.
func (s *metricsSink) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := s.m.requestCounts()
	body := map[string]any{
		"utc_timestamp_ms": time.Now().UnixMilli(),
		"api_server":       map[string]any{"uptime_ms": time.Since(s.start).Milliseconds()},
	}
	for k, v := range counts {
		body[k] = map[string]uint64{"count": v}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode metrics: %w", err)
	}
	_, err = s.f.Write(append(b, '\n'))
	return err
}
