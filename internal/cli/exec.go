package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/term"

	"banger/internal/agentproto"
	"banger/internal/api"
)

// execWith runs a command in a VM through bangerd and relays stdio. It
// returns the guest command's exit status.
func (e *env) execWith(ctx context.Context, name string, req api.ExecRequest, tty bool) (int, error) {
	cl, err := e.client(ctx)
	if err != nil {
		return 0, err
	}
	req.TTY = tty
	stdinF, stdinIsFile := e.stdin.(*os.File)
	if tty && stdinIsFile && term.IsTerminal(int(stdinF.Fd())) {
		if w, h, err := term.GetSize(int(stdinF.Fd())); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
		if os.Getenv("TERM") != "" {
			req.Env = append(req.Env, "TERM="+os.Getenv("TERM"))
		}
	}
	conn, br, err := cl.Exec(ctx, name, req)
	if err != nil {
		return 0, err
	}
	defer conn.Close()

	var wmu sync.Mutex
	send := func(typ byte, payload []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return agentproto.WriteFrame(conn, typ, payload)
	}
	sendJSON := func(typ byte, v any) {
		b, _ := json.Marshal(v)
		_ = send(typ, b)
	}

	if tty && stdinIsFile && term.IsTerminal(int(stdinF.Fd())) {
		old, err := term.MakeRaw(int(stdinF.Fd()))
		if err == nil {
			defer func() { _ = term.Restore(int(stdinF.Fd()), old) }()
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(int(stdinF.Fd())); err == nil {
					sendJSON(agentproto.FrameResize, agentproto.Resize{Rows: uint16(h), Cols: uint16(w)})
				}
			}
		}()
	} else {
		// Without a terminal, ^C and friends go to the guest command's
		// process group; its exit status then reflects them.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
		go func() {
			for s := range sigs {
				if n, ok := s.(syscall.Signal); ok {
					sendJSON(agentproto.FrameSignal, agentproto.Signal{Signal: int(n)})
				}
			}
		}()
	}

	if e.stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := e.stdin.Read(buf)
				if n > 0 {
					if send(agentproto.FrameStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					_ = send(agentproto.FrameStdinEOF, nil)
					return
				}
			}
		}()
	} else {
		_ = send(agentproto.FrameStdinEOF, nil)
	}

	for {
		typ, payload, err := agentproto.ReadFrame(br)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, fmt.Errorf("exec in %s: connection closed before the command finished", name)
			}
			return 0, fmt.Errorf("exec in %s: %w", name, err)
		}
		switch typ {
		case agentproto.FrameStdout:
			_, _ = e.stdout.Write(payload)
		case agentproto.FrameStderr:
			_, _ = e.stderr.Write(payload)
		case agentproto.FrameExit:
			var ex agentproto.Exit
			if err := json.Unmarshal(payload, &ex); err != nil {
				return 0, fmt.Errorf("exec in %s: bad exit frame: %w", name, err)
			}
			if ex.Error != "" {
				return 0, fmt.Errorf("exec in %s: %s", name, ex.Error)
			}
			return ex.Code, nil
		}
	}
}
