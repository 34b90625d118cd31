// Package errdefs holds the error categories shared by every banger layer.
// Code deep in the daemon wraps one of these sentinels with %w; only the API
// edge turns them into wire codes (and the client turns codes back), so the
// category survives however many layers wrap the error.
package errdefs

import (
	"errors"
	"fmt"
)

// Categories.
var (
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInvalid     = errors.New("invalid argument")
	ErrConflict    = errors.New("conflict")
	ErrUnavailable = errors.New("unavailable")
)

// Codes on the wire, one per category plus internal.
const (
	CodeNotFound    = "not_found"
	CodeExists      = "already_exists"
	CodeBadRequest  = "bad_request"
	CodeConflict    = "conflict"
	CodeUnavailable = "unavailable"
	CodeInternal    = "internal"
)

// Code maps err to its wire code.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrExists):
		return CodeExists
	case errors.Is(err, ErrInvalid):
		return CodeBadRequest
	case errors.Is(err, ErrConflict):
		return CodeConflict
	case errors.Is(err, ErrUnavailable):
		return CodeUnavailable
	default:
		return CodeInternal
	}
}

// FromCode rebuilds an error of the category named by code.
func FromCode(code, msg string) error {
	var base error
	switch code {
	case CodeNotFound:
		base = ErrNotFound
	case CodeExists:
		base = ErrExists
	case CodeBadRequest:
		base = ErrInvalid
	case CodeConflict:
		base = ErrConflict
	case CodeUnavailable:
		base = ErrUnavailable
	default:
		return &CodedError{Code: CodeInternal, Msg: msg}
	}
	return &CodedError{Code: code, Msg: msg, base: base}
}

// CodedError is an error that came over the wire.
type CodedError struct {
	Code string
	Msg  string
	base error
}

func (e *CodedError) Error() string { return e.Msg }
func (e *CodedError) Unwrap() error { return e.base }

// NotFound formats an ErrNotFound error.
func NotFound(format string, a ...any) error { return wrap(ErrNotFound, format, a...) }

// Exists formats an ErrExists error.
func Exists(format string, a ...any) error { return wrap(ErrExists, format, a...) }

// Invalid formats an ErrInvalid error.
func Invalid(format string, a ...any) error { return wrap(ErrInvalid, format, a...) }

// Conflict formats an ErrConflict error.
func Conflict(format string, a ...any) error { return wrap(ErrConflict, format, a...) }

// Unavailable formats an ErrUnavailable error.
func Unavailable(format string, a ...any) error { return wrap(ErrUnavailable, format, a...) }

func wrap(cat error, format string, a ...any) error {
	return &catError{msg: fmt.Sprintf(format, a...), cat: cat}
}

type catError struct {
	msg string
	cat error
}

func (e *catError) Error() string { return e.msg }
func (e *catError) Unwrap() error { return e.cat }
