// Package client is the CLI's typed client for bangerd's API. It starts
// bangerd on first use when no daemon answers (until a system install
// supervises it).
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/errdefs"
	"banger/internal/peercred"
)

// Client talks to one bangerd.
type Client struct {
	Socket string
	// Bangerd is the daemon binary to auto-start ("" disables auto-start).
	Bangerd string
	// LogPath receives the auto-started daemon's stderr.
	LogPath string
	// Hint is added to the error when no daemon answers and none may be
	// started.
	Hint string
	// PeerUID is the uid the process serving Socket must run as (read
	// from the socket, SO_PEERCRED): bangerd runs as its owner, and a
	// socket in a directory another user could make (the /tmp fallback)
	// may be someone else's. New sets the caller's uid; root's commands
	// that talk to the owner's bangerd set the owner's.
	PeerUID int

	http *http.Client
}

// ErrNotBangerd is wrapped when the socket is served by another uid than
// PeerUID.
var ErrNotBangerd = errors.New("not the owner's bangerd")

// New returns a client for the socket at path.
func New(socket, bangerd, logPath string) *Client {
	c := &Client{Socket: socket, Bangerd: bangerd, LogPath: logPath, PeerUID: os.Getuid()}
	c.http = &http.Client{Transport: &http.Transport{DialContext: c.dial, DisableKeepAlives: true}}
	return c
}

// dial connects to Socket and checks who serves it.
func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, err
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %T is not a unix connection", c.Socket, conn)
	}
	cred, err := peercred.Get(uc)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if int(cred.UID) != c.PeerUID {
		conn.Close()
		return nil, fmt.Errorf("%s is served by uid %d (pid %d), not uid %d: %w", c.Socket, cred.UID, cred.PID, c.PeerUID, ErrNotBangerd)
	}
	return conn, nil
}

// Ensure makes sure a daemon answers, starting one if allowed, and
// returns its answer to ping.
func (c *Client) Ensure(ctx context.Context) (api.Ping, error) {
	if p, err := c.Ping(ctx); err == nil {
		return p, nil
	}
	if c.Bangerd == "" {
		return api.Ping{}, errdefs.Unavailable("bangerd is not running (socket %s)%s", c.Socket, c.Hint)
	}
	exited, logFrom, err := c.spawn()
	if err != nil {
		return api.Ping{}, errdefs.Unavailable("start bangerd: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		p, err := c.Ping(ctx)
		if err == nil {
			return p, nil
		}
		last = err
		select {
		case code := <-exited:
			// Exit 3: another bangerd holds the owner's lock and is
			// starting; keep asking it.
			if code != 3 {
				return api.Ping{}, errdefs.Unavailable("bangerd exited as it started (exit status %d): %s", code, c.logSince(logFrom))
			}
			exited = nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	return api.Ping{}, errdefs.Unavailable("bangerd did not answer within 15s (%v); see %s", last, c.LogPath)
}

// logSince returns the last line bangerd wrote to its log past offset
// from (its reason for exiting), or where to look.
func (c *Client) logSince(from int64) string {
	f, err := os.Open(c.LogPath)
	if err != nil {
		return "see " + c.LogPath
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, from, 64<<10))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if l := strings.TrimPrefix(lines[len(lines)-1], "bangerd: "); l != "" {
		return l
	}
	return "see " + c.LogPath
}

// spawn starts bangerd with its output appended to LogPath; exited gets
// its exit status, logFrom is where its output starts in the log.
func (c *Client) spawn() (exited <-chan int, logFrom int64, err error) {
	var stderr *os.File
	if c.LogPath != "" {
		_ = os.MkdirAll(filepath.Dir(c.LogPath), 0o700)
		f, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err == nil {
			stderr = f
			defer f.Close()
			if fi, err := f.Stat(); err == nil {
				logFrom = fi.Size()
			}
		}
	}
	cmd := exec.Command(c.Bangerd) // our own daemon binary
	// An on-demand bangerd is never managed, whatever this shell inherited.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, api.SupervisorEnv+"=") })
	cmd.Stdin = nil
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// A session of its own: bangerd must not die with the terminal or the
	// CLI process that happened to start it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	done := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		done <- cmd.ProcessState.ExitCode()
	}()
	return done, logFrom, nil
}

// Ping asks the daemon for its version.
func (c *Client) Ping(ctx context.Context) (api.Ping, error) {
	var p api.Ping
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := c.Do(ctx, http.MethodGet, "/v1/ping", nil, &p)
	return p, err
}

func (c *Client) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bangerd"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, errdefs.Unavailable("talk to bangerd: %v", err)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	var eb api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code == "" {
		return fmt.Errorf("bangerd: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return errdefs.FromCode(eb.Error.Code, eb.Error.Message)
}

// Do performs a JSON request and decodes the JSON answer into out.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// Stream performs a long operation, calling progress for each progress
// event and decoding the final result into out.
func (c *Client) Stream(ctx context.Context, method, path string, body, out any, progress func(string)) error {
	return c.StreamEvents(ctx, method, path, body, out, func(ev api.Event) {
		if ev.Progress != "" && progress != nil {
			progress(ev.Progress)
		}
	})
}

// StreamEvents is Stream handing every progress and transfer event to
// onEvent.
func (c *Client) StreamEvents(ctx context.Context, method, path string, body, out any, onEvent func(api.Event)) error {
	resp, err := c.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		switch {
		case ev.Error != nil:
			return errdefs.FromCode(ev.Error.Code, ev.Error.Message)
		case ev.Result != nil:
			if out != nil {
				return json.Unmarshal(ev.Result, out)
			}
			return nil
		case onEvent != nil:
			onEvent(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return errdefs.Unavailable("read from bangerd: %v", err)
	}
	return errdefs.Unavailable("bangerd closed the stream without a result")
}

// Raw performs a request and returns the response body for the caller to
// read (logs).
func (c *Client) Raw(ctx context.Context, method, path string) (io.ReadCloser, error) {
	resp, err := c.request(ctx, method, path, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp.Body, nil
}

// Exec starts a command and returns the upgraded connection carrying
// agentproto exec frames.
func (c *Client) Exec(ctx context.Context, vmName string, req api.ExecRequest) (net.Conn, *bufio.Reader, error) {
	return c.upgrade(ctx, "/v1/vms/"+url.PathEscape(vmName)+"/exec", api.ExecUpgrade, req)
}

// Connect opens a TCP connection to addr inside a VM and returns it as a
// raw stream.
func (c *Client) Connect(ctx context.Context, vmName, addr string) (net.Conn, *bufio.Reader, error) {
	return c.upgrade(ctx, "/v1/vms/"+url.PathEscape(vmName)+"/connect", api.ConnectUpgrade, api.ConnectRequest{Addr: addr})
}

func (c *Client) upgrade(ctx context.Context, path, proto string, body any) (net.Conn, *bufio.Reader, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, nil, errdefs.Unavailable("talk to bangerd: %v", err)
	}
	b, _ := json.Marshal(body)
	hreq, _ := http.NewRequest(http.MethodPost, "http://bangerd"+path, bytes.NewReader(b))
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", proto)
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, nil, errdefs.Unavailable("send request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, nil, errdefs.Unavailable("read answer: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, nil, decodeError(resp)
	}
	return conn, br, nil
}

// IsUnavailable reports whether err means the daemon could not be reached.
func IsUnavailable(err error) bool { return errors.Is(err, errdefs.ErrUnavailable) }
