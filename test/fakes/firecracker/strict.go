package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Firecracker deserializes bodies with serde and deny_unknown_fields, which
// is stricter than encoding/json in ways a client can trip over: field names
// are case-sensitive, duplicate keys and trailing data are errors, null is
// only accepted for Option fields and required fields must be present. The
// request types mirror the serde structs: value fields tagged
// `fc:"required"` are required, pointer fields are Options, json.RawMessage
// is free-form.

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// decodeStrict decodes body into v (a pointer to a request struct) with the
// semantics above. Its errors are the text of a deserialization fault.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("the request body is empty")
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := walk(d, reflect.TypeOf(v).Elem(), false, ""); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing characters after the JSON value")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("invalid value: %s, expected %s for `%s`", te.Value, rustType(te.Type), te.Field)
		}
		return err
	}
	return nil
}

// walk checks the next JSON value of d against type t.
func walk(d *json.Decoder, t reflect.Type, nullable bool, field string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
		nullable = true
	}
	tok, err := d.Token()
	if err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	if tok == nil {
		if nullable || t == rawMessageType || t.Kind() == reflect.Interface {
			return nil
		}
		return fmt.Errorf("invalid type: null, expected %s for `%s`", rustType(t), field)
	}
	switch {
	case t == rawMessageType || t.Kind() == reflect.Interface || t.Kind() == reflect.Map:
		return skipRest(d, tok)
	case t.Kind() == reflect.Struct:
		if tok != json.Delim('{') {
			return fmt.Errorf("invalid type: %s, expected struct %s for `%s`", describe(tok), t.Name(), field)
		}
		return walkObject(d, t)
	case t.Kind() == reflect.Slice:
		if tok != json.Delim('[') {
			return fmt.Errorf("invalid type: %s, expected a sequence for `%s`", describe(tok), field)
		}
		for d.More() {
			if err := walk(d, t.Elem(), false, field); err != nil {
				return err
			}
		}
		_, err := d.Token() // ']'
		return err
	default:
		if delim, ok := tok.(json.Delim); ok {
			if err := skipRest(d, delim); err != nil {
				return err
			}
			return fmt.Errorf("invalid type: %s, expected %s for `%s`", describe(delim), rustType(t), field)
		}
		return nil // scalar types are checked by encoding/json afterwards
	}
}

func walkObject(d *json.Decoder, t reflect.Type) error {
	type fieldInfo struct {
		typ      reflect.Type
		required bool
	}
	fields := map[string]fieldInfo{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = fieldInfo{typ: f.Type, required: f.Tag.Get("fc") == "required"}
		names = append(names, "`"+name+"`")
	}
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("malformed JSON: %w", err)
		}
		key, _ := tok.(string)
		fi, ok := fields[key]
		if !ok {
			return fmt.Errorf("unknown field `%s`, expected one of %s", key, strings.Join(names, ", "))
		}
		if seen[key] {
			return fmt.Errorf("duplicate field `%s`", key)
		}
		seen[key] = true
		if err := walk(d, fi.typ, false, key); err != nil {
			return err
		}
	}
	if _, err := d.Token(); err != nil { // '}'
		return fmt.Errorf("malformed JSON: %w", err)
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Tag.Get("fc") == "required" && !seen[name] {
			return fmt.Errorf("missing field `%s`", name)
		}
	}
	return nil
}

// skipRest consumes the rest of a value whose first token was tok.
func skipRest(d *json.Decoder, tok json.Token) error {
	delim, ok := tok.(json.Delim)
	if !ok || delim == '}' || delim == ']' {
		return nil
	}
	depth := 1
	for depth > 0 {
		t, err := d.Token()
		if err != nil {
			return fmt.Errorf("malformed JSON: %w", err)
		}
		if dl, ok := t.(json.Delim); ok {
			switch dl {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
	}
	return nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "map"
		}
		return "sequence"
	case string:
		return fmt.Sprintf("string %q", v)
	case json.Number:
		return "integer `" + v.String() + "`"
	case bool:
		return fmt.Sprintf("boolean `%t`", v)
	}
	return fmt.Sprint(tok)
}

// rustType names t the way serde's messages do.
func rustType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Uint8:
		return "u8"
	case reflect.Uint16:
		return "u16"
	case reflect.Uint32:
		return "u32"
	case reflect.Uint64:
		return "u64"
	case reflect.Slice:
		return "a sequence"
	case reflect.Struct:
		return "struct " + t.Name()
	}
	return t.String()
}
