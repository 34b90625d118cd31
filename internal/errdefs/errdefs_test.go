package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestCategories(t *testing.T) {
	tests := []struct {
		name string
		make func(string, ...any) error
		cat  error
		code string
	}{
		{"not found", NotFound, ErrNotFound, CodeNotFound},
		{"exists", Exists, ErrExists, CodeExists},
		{"invalid", Invalid, ErrInvalid, CodeBadRequest},
		{"conflict", Conflict, ErrConflict, CodeConflict},
		{"unavailable", Unavailable, ErrUnavailable, CodeUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.make("vm %q: %d", "dev", 7)
			if got, want := err.Error(), `vm "dev": 7`; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
			if !errors.Is(err, tc.cat) {
				t.Errorf("errors.Is(%v, category) = false", err)
			}
			if got := Code(err); got != tc.code {
				t.Errorf("Code = %q, want %q", got, tc.code)
			}
			// Wrapped any number of times, the category survives.
			wrapped := fmt.Errorf("outer: %w", fmt.Errorf("middle: %w", err))
			if !errors.Is(wrapped, tc.cat) || Code(wrapped) != tc.code {
				t.Errorf("after wrapping: Is = %v, Code = %q", errors.Is(wrapped, tc.cat), Code(wrapped))
			}
			// The category alone maps too.
			if got := Code(tc.cat); got != tc.code {
				t.Errorf("Code(sentinel) = %q, want %q", got, tc.code)
			}
			// Over the wire and back.
			back := FromCode(Code(wrapped), wrapped.Error())
			if back.Error() != wrapped.Error() {
				t.Errorf("FromCode message = %q, want %q", back.Error(), wrapped.Error())
			}
			if !errors.Is(back, tc.cat) || Code(back) != tc.code {
				t.Errorf("FromCode(%q) lost its category: Is = %v, Code = %q", tc.code, errors.Is(back, tc.cat), Code(back))
			}
			var ce *CodedError
			if !errors.As(fmt.Errorf("client: %w", back), &ce) || ce.Code != tc.code {
				t.Errorf("FromCode result is not a *CodedError with code %q: %#v", tc.code, back)
			}
			// No other category matches.
			for _, other := range tests {
				if other.name != tc.name && (errors.Is(err, other.cat) || errors.Is(back, other.cat)) {
					t.Errorf("%s error also matches %s", tc.name, other.name)
				}
			}
		})
	}
}

func TestInternal(t *testing.T) {
	for _, err := range []error{errors.New("disk on fire"), fmt.Errorf("wrapped: %w", errors.New("x")), nil} {
		if got := Code(err); got != CodeInternal {
			t.Errorf("Code(%v) = %q, want %q", err, got, CodeInternal)
		}
	}
	for _, code := range []string{CodeInternal, "", "something_new"} {
		back := FromCode(code, "boom")
		if back.Error() != "boom" || Code(back) != CodeInternal {
			t.Errorf("FromCode(%q) = %v with code %q, want internal", code, back, Code(back))
		}
		for _, cat := range []error{ErrNotFound, ErrExists, ErrInvalid, ErrConflict, ErrUnavailable} {
			if errors.Is(back, cat) {
				t.Errorf("FromCode(%q) matches %v", code, cat)
			}
		}
	}
}
