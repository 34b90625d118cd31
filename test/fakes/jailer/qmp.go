package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmpClient is a minimal QMP connection: commands one at a time, and the
// SHUTDOWN event's reason, which tells a guest reboot from a power-off.
type qmpClient struct {
	conn net.Conn
	r    *bufio.Reader

	mu   sync.Mutex // one command in flight
	resp chan qmpMessage

	reasonMu sync.Mutex
	reason   string

	done chan struct{} // closed when the connection ends

	// onPort, when set before handshake, hears each VSERPORT_CHANGE: the
	// guest opening or closing the virtio-serial port with device id id.
	onPort func(id string, open bool)
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

func newQMP(conn net.Conn) *qmpClient {
	return &qmpClient{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), resp: make(chan qmpMessage, 1), done: make(chan struct{})}
}

func (q *qmpClient) readMessage() (qmpMessage, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return qmpMessage{}, fmt.Errorf("read QMP: %w", err)
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMessage{}, fmt.Errorf("decode QMP message %q: %w", line, err)
	}
	return m, nil
}

// handshake reads the greeting and negotiates capabilities, then starts
// the reader.
func (q *qmpClient) handshake(timeout time.Duration) error {
	_ = q.conn.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = q.conn.SetDeadline(time.Time{}) }()
	for {
		m, err := q.readMessage()
		if err != nil {
			return err
		}
		if m.QMP != nil {
			break
		}
	}
	if _, err := q.conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		return fmt.Errorf("negotiate QMP capabilities: %w", err)
	}
	for {
		m, err := q.readMessage()
		if err != nil {
			return err
		}
		if m.Error != nil {
			return fmt.Errorf("negotiate QMP capabilities: %s", m.Error.Desc)
		}
		if m.Return != nil {
			break
		}
		q.noteEvent(m)
	}
	go q.run()
	return nil
}

func (q *qmpClient) run() {
	defer close(q.done)
	for {
		m, err := q.readMessage()
		if err != nil {
			return
		}
		if m.Event != "" {
			q.noteEvent(m)
			continue
		}
		select {
		case q.resp <- m:
		default: // an answer nobody waits for any more
		}
	}
}

func (q *qmpClient) noteEvent(m qmpMessage) {
	if m.Event == "VSERPORT_CHANGE" {
		var d struct {
			ID   string `json:"id"`
			Open bool   `json:"open"`
		}
		if json.Unmarshal(m.Data, &d) == nil && q.onPort != nil {
			q.onPort(d.ID, d.Open)
		}
		return
	}
	if m.Event != "SHUTDOWN" {
		return
	}
	var d struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(m.Data, &d)
	q.reasonMu.Lock()
	if q.reason == "" {
		q.reason = d.Reason
	}
	q.reasonMu.Unlock()
}

// shutdownReason waits up to timeout for the connection to end (QEMU has
// exited and its last events are read) and returns the SHUTDOWN reason.
func (q *qmpClient) shutdownReason(timeout time.Duration) string {
	select {
	case <-q.done:
	case <-time.After(timeout):
	}
	q.reasonMu.Lock()
	defer q.reasonMu.Unlock()
	return q.reason
}

func (q *qmpClient) execute(cmd string, args any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode QMP %s: %w", cmd, err)
	}
	for len(q.resp) > 0 {
		<-q.resp // drop a late answer to an earlier command
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("send QMP %s: %w", cmd, err)
	}
	select {
	case m := <-q.resp:
		if m.Error != nil {
			return fmt.Errorf("QMP %s: %s", cmd, m.Error.Desc)
		}
		return nil
	case <-q.done:
		return errors.New("QMP connection closed: the VM is gone")
	case <-time.After(10 * time.Second):
		return fmt.Errorf("QMP %s: no answer", cmd)
	}
}
