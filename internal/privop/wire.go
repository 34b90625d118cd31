package privop

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Wire format between bangerd and the helper: one request per connection,
// one answer. Each is a frame: a 4-byte big-endian length, then that many
// bytes of JSON. A request is {"op":NAME,"args":{...}}; an answer is
// {"ok":true,"result":{...}} or {"ok":false,"error":{"code":...,"message":...}}.
// An open_tap answer carries the tap's fd, and a debootstrap_image answer
// the finished image's fd, as SCM_RIGHTS on its first byte. A
// launch_firecracker request carries its files' fds the same way, one per
// JailFile and in that order (RequestFiles); any other request carries none.

// Frame limits. MaxRequestFiles bounds the fds one request may carry.
const (
	MaxRequest      = 64 << 10
	MaxAnswer       = 1 << 20
	MaxRequestFiles = 16
)

// RequestFiles is the number of fds op's request must carry: one per file
// of a LaunchFirecracker, two for a CreateSnapshot, none for any other op.
// The helper refuses a request with any other number.
func RequestFiles(op Op) int {
	switch o := op.(type) {
	case LaunchFirecracker:
		return len(o.Files)
	case CreateSnapshot:
		return 2
	}
	return 0
}

// Code classifies a helper error on the wire.
type Code string

// Error codes.
const (
	CodeBadRequest Code = "bad_request"
	CodeForbidden  Code = "forbidden"
	CodeNotFound   Code = "not_found"
	CodeInternal   Code = "internal"
	// CodeBusy: the helper is already running an exclusive op (an image
	// build); retry later.
	CodeBusy Code = "busy"
)

// Error is a failed answer: the helper refused or failed an op.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns err's code: its own if it is (or wraps) an *Error,
// internal otherwise.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Request is the JSON of a request frame.
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Answer is the JSON of an answer frame.
type Answer struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// ErrFrameTooLarge is wrapped when a frame's declared length exceeds the limit.
var ErrFrameTooLarge = errors.New("frame too large")

// ReadFrame reads one frame of at most limit bytes. A larger declared
// length is refused before any of the body is read.
func ReadFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d: %w", n, limit, ErrFrameTooLarge)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read frame body: %w", err)
	}
	return buf, nil
}

// Frame returns body with its length prefix.
func Frame(body []byte) []byte {
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, uint32(len(body)))
	return append(out, body...)
}

// EncodeRequest validates op and returns its request body (unframed).
func EncodeRequest(op Op) ([]byte, error) {
	if _, ok := helperOps[op.Name()]; !ok {
		return nil, fmt.Errorf("encode %s: not a helper op", op.Name())
	}
	if err := op.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", op.Name(), err)
	}
	args, err := json.Marshal(op)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", op.Name(), err)
	}
	return json.Marshal(Request{Op: op.Name(), Args: args})
}

// DecodeRequest parses and validates a request body. Every failure is an
// *Error with code bad_request.
func DecodeRequest(body []byte) (Op, error) {
	var req Request
	if err := decodeStrict(body, &req); err != nil {
		return nil, Errorf(CodeBadRequest, "decode request: %v", err)
	}
	dec, ok := helperOps[req.Op]
	if !ok {
		return nil, Errorf(CodeBadRequest, "unknown op %q", truncate(req.Op, 64))
	}
	args := []byte(req.Args)
	if len(args) == 0 || bytes.Equal(args, []byte("null")) {
		args = []byte("{}")
	}
	op, err := dec(args)
	if err != nil {
		return nil, Errorf(CodeBadRequest, "decode %s: %v", req.Op, err)
	}
	if err := op.Validate(); err != nil {
		return nil, Errorf(CodeBadRequest, "%s: %v", req.Op, err)
	}
	return op, nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func decodeStrict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// EncodeAnswer builds an answer body: result when err is nil, else err's
// code and message (code internal unless err is an *Error).
func EncodeAnswer(result any, err error) []byte {
	a := Answer{OK: err == nil}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Code: CodeInternal, Message: err.Error()}
		}
		a.Error = e
	} else if result != nil {
		raw, merr := json.Marshal(result)
		if merr != nil {
			a = Answer{Error: Errorf(CodeInternal, "encode result: %v", merr)}
		} else {
			a.Result = raw
		}
	}
	body, _ := json.Marshal(a) // Answer holds only strings and raw JSON
	return body
}

// DecodeAnswer parses an answer body. A failed answer is returned as the
// *Error it carries.
func DecodeAnswer(body []byte) (json.RawMessage, error) {
	var a Answer
	if err := decodeStrict(body, &a); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if !a.OK {
		if a.Error == nil {
			return nil, errors.New("decode answer: failed answer without an error")
		}
		return nil, a.Error
	}
	return a.Result, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
