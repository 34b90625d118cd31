package fcspec

import "encoding/json"

// Example returns a valid body of type name with every field that banger
// may send set (all but the deprecated ones), so a test can remove or
// change one field at a time.
func Example(name string) map[string]any {
	t := Types[name]
	out := map[string]any{}
	if t.Open {
		out["key"] = "value"
		return out
	}
	for _, f := range t.Fields {
		if !f.Deprecated {
			out[f.Name] = exampleValue(f)
		}
	}
	return out
}

// ExampleJSON is Example encoded.
func ExampleJSON(name string) []byte {
	b, err := json.Marshal(Example(name))
	if err != nil {
		panic(err) // maps of JSON values always encode
	}
	return b
}

func exampleValue(f Field) any {
	switch f.Kind {
	case String:
		switch {
		case len(f.Enum) > 0:
			return f.Enum[0]
		case f.Pattern != nil:
			return "id_1"
		}
		return "x"
	case Integer:
		n := int64(1)
		if f.HasMin {
			n = f.Min
		}
		if f.HasMax && n > f.Max {
			n = f.Max
		}
		return json.Number(itoa(n))
	case Boolean:
		return true
	case Object:
		if f.Ref == "" {
			return map[string]any{"key": "value"}
		}
		return Example(f.Ref)
	case Array:
		return []any{exampleValue(*f.Items)}
	}
	return nil
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
