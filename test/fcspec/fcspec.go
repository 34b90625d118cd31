// Package fcspec states, as banger's own test facts, the part of Firecracker's
// HTTP API (v1.16.1) that banger and its fake firecracker speak: every
// endpoint and method, each request body's fields with their JSON types,
// which are required, their enums and ranges, and the id rule for path
// parameters. Validate checks a request against those facts, so a test can
// hold every body bangerd sends, and every request type the fake decodes,
// to the published API. It is imported by tests only.
package fcspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// Kind is a field's JSON type.
type Kind int

// The JSON types a field can have.
const (
	String Kind = iota + 1
	Integer
	Boolean
	Object // a nested body type (Ref), or any object when Ref is ""
	Array  // of Items
)

func (k Kind) String() string {
	switch k {
	case String:
		return "string"
	case Integer:
		return "integer"
	case Boolean:
		return "boolean"
	case Object:
		return "object"
	case Array:
		return "array"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Field is one property of a body type.
type Field struct {
	Name     string
	Kind     Kind
	Required bool
	// Deprecated fields are still accepted by Firecracker but flagged;
	// banger must not send them, so Validate refuses them.
	Deprecated bool
	Enum       []string
	// Min and Max bound an Integer when HasMin/HasMax are set. Integers
	// are unsigned unless Signed: Firecracker's are Rust u8..u64.
	Min, Max       int64
	HasMin, HasMax bool
	Signed         bool
	// Pattern constrains a String (ids).
	Pattern *regexp.Regexp
	// Ref names the body type of an Object field.
	Ref string
	// Items describes the elements of an Array (its Name is unused).
	Items *Field
}

// Type is a body type: a JSON object with a closed set of fields
// (Firecracker deserializes with unknown fields denied).
type Type struct {
	Name   string
	Fields []Field
	// Open objects take any members (the MMDS data store).
	Open bool
}

// Field returns the field called name.
func (t Type) Field(name string) (Field, bool) {
	for _, f := range t.Fields {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}

// Endpoint is one method on one path. Path segments written {name} are
// parameters, which must match IDPattern; when the body has a field of the
// same name, its value must equal the parameter.
type Endpoint struct {
	Method string
	Path   string
	// Body names the request body type; "" means the request has none.
	Body string
	// BodyOptional: the body may be left out.
	BodyOptional bool
}

// Errors Validate wraps, so tests can tell the failures apart.
var (
	ErrUnknownEndpoint = errors.New("unknown endpoint")
	ErrBody            = errors.New("malformed body")
	ErrMissing         = errors.New("missing required field")
	ErrUnknownField    = errors.New("unknown field")
	ErrDeprecated      = errors.New("deprecated field")
	ErrType            = errors.New("wrong type")
	ErrEnum            = errors.New("value not in enum")
	ErrRange           = errors.New("value out of range")
	ErrPattern         = errors.New("value does not match pattern")
	ErrMismatch        = errors.New("path and body disagree")
)

// Lookup finds the endpoint for method and path, and the values of its path
// parameters.
func Lookup(method, path string) (Endpoint, map[string]string, error) {
	path, _, _ = strings.Cut(path, "?")
	got := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, ep := range Endpoints {
		if ep.Method != method {
			continue
		}
		want := strings.Split(strings.TrimPrefix(ep.Path, "/"), "/")
		if len(want) != len(got) {
			continue
		}
		params := map[string]string{}
		ok := true
		for i, w := range want {
			if strings.HasPrefix(w, "{") && strings.HasSuffix(w, "}") && got[i] != "" {
				params[strings.Trim(w, "{}")] = got[i]
				continue
			}
			if w != got[i] {
				ok = false
				break
			}
		}
		if ok {
			return ep, params, nil
		}
	}
	return Endpoint{}, nil, fmt.Errorf("%w: %s %s", ErrUnknownEndpoint, method, path)
}

// Validate checks one request against the facts: a known endpoint, valid
// path ids, and a body (or none) of the endpoint's type.
func Validate(method, path string, body []byte) error {
	ep, params, err := Lookup(method, path)
	if err != nil {
		return err
	}
	for name, v := range params {
		if !IDPattern.MatchString(v) {
			return fmt.Errorf("%s %s: %w: path parameter %s %q (want %s)", method, path, ErrPattern, name, v, IDPattern)
		}
	}
	empty := len(bytes.TrimSpace(body)) == 0
	if ep.Body == "" {
		if !empty {
			return fmt.Errorf("%s %s: %w: this endpoint takes no body", method, path, ErrBody)
		}
		return nil
	}
	if empty {
		if ep.BodyOptional {
			return nil
		}
		return fmt.Errorf("%s %s: %w: the body is required", method, path, ErrBody)
	}
	v, err := decode(body)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, ErrBody, err)
	}
	if err := checkObject(Types[ep.Body], v, ep.Body); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	obj := v.(map[string]any)
	for name, pv := range params {
		if bv, ok := obj[name]; ok && bv != pv {
			return fmt.Errorf("%s %s: %w: %s is %q in the path and %v in the body", method, path, ErrMismatch, name, pv, bv)
		}
	}
	return nil
}

// decode reads one JSON value, numbers kept exact, nothing after it.
func decode(body []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// checkObject checks v against body type t; at names the value in errors.
func checkObject(t Type, v any, at string) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%w: %s is %s, want an object", ErrType, at, jsonKind(v))
	}
	if t.Open {
		return nil
	}
	for _, f := range t.Fields {
		if _, ok := obj[f.Name]; f.Required && !ok {
			return fmt.Errorf("%w: %s.%s", ErrMissing, at, f.Name)
		}
	}
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	slices.Sort(names) // first error is the same every run
	for _, k := range names {
		f, ok := t.Field(k)
		if !ok {
			return fmt.Errorf("%w: %s.%s (%s has %s)", ErrUnknownField, at, k, t.Name, fieldNames(t))
		}
		if f.Deprecated {
			return fmt.Errorf("%w: %s.%s", ErrDeprecated, at, k)
		}
		if err := checkValue(f, obj[k], at+"."+k); err != nil {
			return err
		}
	}
	return nil
}

func checkValue(f Field, v any, at string) error {
	// Firecracker takes null only for an optional (Option) field.
	if v == nil {
		if f.Required {
			return fmt.Errorf("%w: %s is null", ErrType, at)
		}
		return nil
	}
	switch f.Kind {
	case String:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%w: %s is %s, want a string", ErrType, at, jsonKind(v))
		}
		if len(f.Enum) > 0 && !slices.Contains(f.Enum, s) {
			return fmt.Errorf("%w: %s is %q, want one of %q", ErrEnum, at, s, f.Enum)
		}
		if f.Pattern != nil && !f.Pattern.MatchString(s) {
			return fmt.Errorf("%w: %s is %q, want %s", ErrPattern, at, s, f.Pattern)
		}
	case Integer:
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%w: %s is %s, want an integer", ErrType, at, jsonKind(v))
		}
		i, err := n.Int64()
		if err != nil {
			return fmt.Errorf("%w: %s is %s, want an integer", ErrType, at, n)
		}
		if (!f.Signed && i < 0) || (f.HasMin && i < f.Min) || (f.HasMax && i > f.Max) {
			return fmt.Errorf("%w: %s is %d, want %s", ErrRange, at, i, rangeText(f))
		}
	case Boolean:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%w: %s is %s, want a boolean", ErrType, at, jsonKind(v))
		}
	case Object:
		if f.Ref == "" {
			if _, ok := v.(map[string]any); !ok {
				return fmt.Errorf("%w: %s is %s, want an object", ErrType, at, jsonKind(v))
			}
			return nil
		}
		return checkObject(Types[f.Ref], v, at)
	case Array:
		items, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%w: %s is %s, want an array", ErrType, at, jsonKind(v))
		}
		for i, it := range items {
			item := *f.Items
			item.Required = true // an element cannot be null
			if err := checkValue(item, it, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func rangeText(f Field) string {
	lo := "0"
	if f.Signed {
		lo = "-inf"
	}
	if f.HasMin {
		lo = fmt.Sprint(f.Min)
	}
	hi := "inf"
	if f.HasMax {
		hi = fmt.Sprint(f.Max)
	}
	return "[" + lo + ", " + hi + "]"
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

func fieldNames(t Type) string {
	names := make([]string, len(t.Fields))
	for i, f := range t.Fields {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}
