package fcspec

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
)

// mutation changes one thing in a valid body and names the error it must
// cause.
type mutation struct {
	desc  string
	apply func(body map[string]any)
	want  error
}

// mutations derives, from the facts of type name, one invalid variant of
// its Example per rule: each required field dropped, an unknown field
// added, each field given a wrong type, a value outside each enum, range
// and pattern, each deprecated field sent; nested types likewise.
func mutations(name string) []mutation {
	t := Types[name]
	if t.Open {
		return nil
	}
	ms := []mutation{{
		desc:  "unknown field added",
		apply: func(b map[string]any) { b["no_such_field"] = true },
		want:  ErrUnknownField,
	}}
	for _, f := range t.Fields {
		if f.Required {
			ms = append(ms, mutation{"required " + f.Name + " dropped", func(b map[string]any) { delete(b, f.Name) }, ErrMissing})
			ms = append(ms, mutation{"required " + f.Name + " null", func(b map[string]any) { b[f.Name] = nil }, ErrType})
		}
		if f.Deprecated {
			ms = append(ms, mutation{"deprecated " + f.Name + " sent", func(b map[string]any) { b[f.Name] = exampleValue(f) }, ErrDeprecated})
			continue
		}
		set := func(v any) func(map[string]any) { return func(b map[string]any) { b[f.Name] = v } }
		ms = append(ms, mutation{f.Name + " of the wrong type", set(wrongType(f.Kind)), ErrType})
		if len(f.Enum) > 0 {
			ms = append(ms, mutation{f.Name + " outside its enum", set("NotAValue"), ErrEnum})
		}
		if f.Pattern != nil {
			ms = append(ms, mutation{f.Name + " with a dash", set("a-b"), ErrPattern})
		}
		if f.Kind == Integer {
			lo := int64(0)
			if f.HasMin {
				lo = f.Min
			}
			if !f.Signed || f.HasMin {
				ms = append(ms, mutation{fmt.Sprintf("%s below %d", f.Name, lo), set(json.Number(fmt.Sprint(lo - 1))), ErrRange})
			}
			if f.HasMax {
				ms = append(ms, mutation{fmt.Sprintf("%s above %d", f.Name, f.Max), set(json.Number(fmt.Sprint(f.Max + 1))), ErrRange})
			}
			ms = append(ms, mutation{f.Name + " not integral", set(json.Number("1.5")), ErrType})
		}
		// Nested types: the same rules one level down.
		var inner string
		var pick func(map[string]any) map[string]any
		switch {
		case f.Kind == Object && f.Ref != "":
			inner, pick = f.Ref, func(b map[string]any) map[string]any { return b[f.Name].(map[string]any) }
		case f.Kind == Array && f.Items.Kind == Object && f.Items.Ref != "":
			inner, pick = f.Items.Ref, func(b map[string]any) map[string]any { return b[f.Name].([]any)[0].(map[string]any) }
		}
		if inner != "" {
			for _, m := range mutations(inner) {
				ms = append(ms, mutation{f.Name + ": " + m.desc, func(b map[string]any) { m.apply(pick(b)) }, m.want})
			}
		}
	}
	return ms
}

func wrongType(k Kind) any {
	if k == String {
		return json.Number("1")
	}
	return "x"
}

// pathOf fills the endpoint's parameters with the id Example uses.
func pathOf(ep Endpoint) string {
	parts := strings.Split(ep.Path, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "{") {
			parts[i] = "id_1"
		}
	}
	return strings.Join(parts, "/")
}

// deepCopy copies a JSON value made of maps and slices.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := maps.Clone(v)
		for k, x := range m {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}

// TestEveryBodyRuleIsEnforced: for every endpoint's body type, the complete
// example passes and each single violation of a stated fact fails with the
// error that names it.
func TestEveryBodyRuleIsEnforced(t *testing.T) {
	checked := 0
	for _, ep := range Endpoints {
		if ep.Body == "" {
			continue
		}
		path := pathOf(ep)
		t.Run(ep.Method+" "+ep.Path, func(t *testing.T) {
			if err := Validate(ep.Method, path, ExampleJSON(ep.Body)); err != nil {
				t.Fatalf("the complete example of %s fails: %v", ep.Body, err)
			}
			for _, m := range mutations(ep.Body) {
				body := deepCopy(Example(ep.Body)).(map[string]any)
				m.apply(body)
				b, err := json.Marshal(body)
				if err != nil {
					t.Fatal(err)
				}
				err = Validate(ep.Method, path, b)
				if !errors.Is(err, m.want) {
					t.Errorf("%s: %s\n  body %s\n  got %v, want %v", ep.Body, m.desc, b, err, m.want)
				}
				checked++
			}
		})
	}
	if checked < 100 {
		t.Errorf("only %d mutations checked: the facts are missing", checked)
	}
}

// TestStatedFacts pins the facts the project relies on by name, so that a
// table edit that loosens one fails here and not only on a real host.
func TestStatedFacts(t *testing.T) {
	tests := []struct {
		method, path, body string
		want               error
	}{
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128}`, nil},
		{"PUT", "/machine-config", `{"vcpu_count":32,"mem_size_mib":128}`, nil},
		{"PUT", "/machine-config", `{"vcpu_count":0,"mem_size_mib":128}`, ErrRange},
		{"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":128}`, ErrRange},
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":0}`, ErrRange},
		{"PUT", "/machine-config", `{"vcpu_count":2}`, ErrMissing},
		{"PATCH", "/machine-config", `{"smt":true}`, nil},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock"}`, nil},
		{"PUT", "/vsock", `{"guest_cid":2,"uds_path":"/v.sock"}`, ErrRange},
		{"PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock","vsock_id":"agent"}`, ErrDeprecated},
		{"PUT", "/drives/root_1", `{"drive_id":"root_1","is_root_device":true}`, nil},
		{"PUT", "/drives/work-1", `{"drive_id":"work-1","is_root_device":false}`, ErrPattern},
		{"PUT", "/drives/work.1", `{"drive_id":"work.1","is_root_device":false}`, ErrPattern},
		{"PUT", "/drives/a", `{"drive_id":"b","is_root_device":false}`, ErrMismatch},
		{"PUT", "/drives/a", `{"drive_id":"a","is_root_device":false,"cache_type":"None"}`, ErrEnum},
		{"PUT", "/drives/a", `{"drive_id":"a","is_root_device":"yes"}`, ErrType},
		{"PUT", "/drives/", `{"drive_id":"a","is_root_device":true}`, ErrUnknownEndpoint},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","mtu":67}`, ErrRange},
		{"PUT", "/logger", `{"level":"Verbose"}`, ErrEnum},
		{"PUT", "/logger", `{"level":"Info"}`, nil},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, nil},
		{"PUT", "/actions", `{"action_type":"InstanceHalt"}`, ErrEnum},
		{"PUT", "/actions", `{"action_type":"InstanceStart"} {}`, ErrBody},
		{"PUT", "/actions", ``, ErrBody},
		{"PUT", "/mmds", `{"anything":{"goes":[1]}}`, nil},
		{"PUT", "/mmds", `[1]`, ErrType},
		{"PATCH", "/balloon/hinting/start", ``, nil},
		{"GET", "/", ``, nil},
		{"GET", "/", `{}`, ErrBody},
		{"GET", "/machine-config", ``, nil},
		{"DELETE", "/drives/a", ``, ErrUnknownEndpoint},
		{"GET", "/no-such-thing", ``, ErrUnknownEndpoint},
	}
	for _, tc := range tests {
		err := Validate(tc.method, tc.path, []byte(tc.body))
		if (tc.want == nil && err != nil) || !errors.Is(err, tc.want) {
			t.Errorf("Validate(%s %s %s) = %v, want %v", tc.method, tc.path, tc.body, err, tc.want)
		}
	}
}

// TestTablesAreWhole: every type an endpoint or field names is stated.
func TestTablesAreWhole(t *testing.T) {
	seen := map[string]bool{}
	for _, ep := range Endpoints {
		if seen[ep.Method+ep.Path] {
			t.Errorf("%s %s listed twice", ep.Method, ep.Path)
		}
		seen[ep.Method+ep.Path] = true
		if _, ok := Types[ep.Body]; ep.Body != "" && !ok {
			t.Errorf("%s %s: no type %s", ep.Method, ep.Path, ep.Body)
		}
		switch ep.Method {
		case http.MethodGet, http.MethodPut, http.MethodPatch:
		default:
			t.Errorf("%s %s: Firecracker's API has no such method", ep.Method, ep.Path)
		}
	}
	for name, ty := range Types {
		if ty.Name != name {
			t.Errorf("type %s is filed as %s", ty.Name, name)
		}
		for _, f := range ty.Fields {
			ref := f.Ref
			if f.Kind == Array {
				ref = f.Items.Ref
			}
			if _, ok := Types[ref]; ref != "" && !ok {
				t.Errorf("%s.%s: no type %s", name, f.Name, ref)
			}
		}
	}
}
