package main

import (
	"encoding/json"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"banger/test/fcspec"
)

// Each request body type of the API (as test/fcspec states it) and the
// fake's model that decodes it.
var fakeModels = map[string]reflect.Type{
	"InstanceActionInfo":         reflect.TypeFor[InstanceActionInfo](),
	"Balloon":                    reflect.TypeFor[Balloon](),
	"BalloonUpdate":              reflect.TypeFor[BalloonUpdate](),
	"BalloonStatsUpdate":         reflect.TypeFor[BalloonStatsUpdate](),
	"BootSource":                 reflect.TypeFor[BootSource](),
	"CpuConfig":                  reflect.TypeFor[CPUConfig](),
	"Drive":                      reflect.TypeFor[Drive](),
	"PartialDrive":               reflect.TypeFor[PartialDrive](),
	"Logger":                     reflect.TypeFor[Logger](),
	"MachineConfiguration":       reflect.TypeFor[MachineConfig](),
	"MachineConfigurationUpdate": reflect.TypeFor[MachineConfigUpdate](),
	"Metrics":                    reflect.TypeFor[Metrics](),
	"MmdsConfig":                 reflect.TypeFor[MmdsConfig](),
	"EntropyDevice":              reflect.TypeFor[EntropyDevice](),
	"SerialDevice":               reflect.TypeFor[SerialDevice](),
	"NetworkInterface":           reflect.TypeFor[NetworkInterface](),
	"PartialNetworkInterface":    reflect.TypeFor[PartialNetworkInterface](),
	"SnapshotCreateParams":       reflect.TypeFor[SnapshotCreateParams](),
	"SnapshotLoadParams":         reflect.TypeFor[SnapshotLoadParams](),
	"Vm":                         reflect.TypeFor[VM](),
	"Vsock":                      reflect.TypeFor[Vsock](),
}

// Body types the fake has no model for, and why.
var notModelled = map[string]string{
	"MmdsContentsObject":      "any JSON object, decoded as such",
	"BalloonStartCmd":         "the balloon is not emulated; the request fails before its body matters",
	"Pmem":                    "pmem is not emulated",
	"PartialPmem":             "pmem is not emulated",
	"MemoryHotplugConfig":     "memory hotplug is not emulated",
	"MemoryHotplugSizeUpdate": "memory hotplug is not emulated",
}

// TestEveryBodyTypeHasAModel: a body type added to the facts needs a model
// in the fake, or a stated reason why not.
func TestEveryBodyTypeHasAModel(t *testing.T) {
	for _, ep := range fcspec.Endpoints {
		if ep.Body == "" {
			continue
		}
		_, modelled := fakeModels[ep.Body]
		_, excused := notModelled[ep.Body]
		if modelled == excused {
			t.Errorf("%s %s: body %s must be either modelled or excused (modelled %v, excused %v)", ep.Method, ep.Path, ep.Body, modelled, excused)
		}
	}
}

// TestModelsMatchTheFacts holds every model, nested types included, to the
// facts field for field: the same JSON names, the same required set,
// compatible JSON types, optional fields nullable (Rust Options) and
// required ones not, integer types wide enough for the stated range.
func TestModelsMatchTheFacts(t *testing.T) {
	for name, typ := range fakeModels {
		compareType(t, name, typ)
	}
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

func compareType(t *testing.T, name string, typ reflect.Type) {
	t.Helper()
	spec, ok := fcspec.Types[name]
	if !ok {
		t.Errorf("no fact for type %s", name)
		return
	}
	model := map[string]reflect.StructField{}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		jname, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if jname != "" && jname != "-" {
			model[jname] = f
		}
	}
	for _, sf := range spec.Fields {
		mf, ok := model[sf.Name]
		if !ok {
			t.Errorf("%s: the fake's %s has no field %s", name, typ.Name(), sf.Name)
			continue
		}
		delete(model, sf.Name)
		at := name + "." + sf.Name
		if got := mf.Tag.Get("fc") == "required"; got != sf.Required {
			t.Errorf("%s: required in the fake %v, in the facts %v", at, got, sf.Required)
		}
		ft := mf.Type
		if ft.Kind() == reflect.Pointer {
			if sf.Required {
				t.Errorf("%s: required, but the fake's field is a pointer and takes null", at)
			}
			ft = ft.Elem()
		} else if !sf.Required && ft.Kind() != reflect.Slice {
			t.Errorf("%s: optional (null allowed), but the fake's field is a plain %s", at, ft)
		}
		compareKind(t, at, sf, ft)
	}
	for extra := range model {
		t.Errorf("%s: the fake's %s has field %s, which the API does not", name, typ.Name(), extra)
	}
}

func compareKind(t *testing.T, at string, sf fcspec.Field, ft reflect.Type) {
	t.Helper()
	if ft == rawMessage {
		if sf.Kind != fcspec.Object && sf.Kind != fcspec.Array {
			t.Errorf("%s: free-form in the fake, a %s in the facts", at, sf.Kind)
		}
		return
	}
	switch sf.Kind {
	case fcspec.String:
		if ft.Kind() != reflect.String {
			t.Errorf("%s: %s in the fake, a string in the facts", at, ft)
		}
	case fcspec.Boolean:
		if ft.Kind() != reflect.Bool {
			t.Errorf("%s: %s in the fake, a boolean in the facts", at, ft)
		}
	case fcspec.Integer:
		var limit uint64
		switch ft.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			if sf.Signed {
				t.Errorf("%s: unsigned %s in the fake, signed in the facts", at, ft)
			}
			limit = math.MaxUint64 >> (64 - ft.Bits())
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			limit = math.MaxInt64 >> (64 - ft.Bits())
		default:
			t.Errorf("%s: %s in the fake, an integer in the facts", at, ft)
			return
		}
		if sf.HasMax && uint64(sf.Max) > limit {
			t.Errorf("%s: the fake's %s cannot hold the maximum %d", at, ft, sf.Max)
		}
	case fcspec.Object:
		if ft.Kind() != reflect.Struct {
			t.Errorf("%s: %s in the fake, an object in the facts", at, ft)
			return
		}
		compareType(t, sf.Ref, ft)
	case fcspec.Array:
		if ft.Kind() != reflect.Slice {
			t.Errorf("%s: %s in the fake, an array in the facts", at, ft)
			return
		}
		compareKind(t, at+"[]", *sf.Items, ft.Elem())
	}
}

// TestStrictDecodingAgreesWithTheFacts: the fake's decoder takes every
// complete body the facts allow, and refuses one with a required field
// dropped or an unknown field added, as Firecracker's deserializer does.
func TestStrictDecodingAgreesWithTheFacts(t *testing.T) {
	for name, typ := range fakeModels {
		valid := fcspec.ExampleJSON(name)
		if err := decodeStrict(valid, reflect.New(typ).Interface()); err != nil {
			t.Errorf("%s: the fake refuses the complete body %s: %v", name, valid, err)
		}
		spec := fcspec.Types[name]
		body := fcspec.Example(name)
		body["no_such_field"] = 1
		b, _ := json.Marshal(body)
		if err := decodeStrict(b, reflect.New(typ).Interface()); err == nil || !strings.Contains(err.Error(), "unknown field `no_such_field`") {
			t.Errorf("%s: an unknown field: %v", name, err)
		}
		for _, f := range spec.Fields {
			if !f.Required {
				continue
			}
			body := fcspec.Example(name)
			delete(body, f.Name)
			b, _ := json.Marshal(body)
			if err := decodeStrict(b, reflect.New(typ).Interface()); err == nil || !strings.Contains(err.Error(), "missing field `"+f.Name+"`") {
				t.Errorf("%s: without %s: %v", name, f.Name, err)
			}
		}
	}
}

// TestFakeRoutesEveryEndpoint: each endpoint of the API reaches a handler
// in the fake (which may then refuse it as not emulated or as out of
// phase), never "invalid path", and a request outside the API does.
func TestFakeRoutesEveryEndpoint(t *testing.T) {
	m := newTestEnv(t).m
	const invalid = "Invalid request method and/or path"
	// Endpoints the fake does not route yet; each entry is a known gap.
	gaps := []string{"GET /hotplug/memory"}
	for _, ep := range fcspec.Endpoints {
		path := strings.NewReplacer("{drive_id}", "d1", "{iface_id}", "n1", "{id}", "p1").Replace(ep.Path)
		// An empty body stops every body-taking handler at decoding,
		// before it can change the machine.
		_, err := m.route(ep.Method, path, nil)
		routed := err == nil || !strings.Contains(err.Error(), invalid)
		if gap := slices.Contains(gaps, ep.Method+" "+ep.Path); routed == gap {
			t.Errorf("%s %s: routed %v (listed as a gap: %v): %v", ep.Method, path, routed, gap, err)
		}
	}
	for _, r := range [][2]string{{http.MethodDelete, "/drives/d1"}, {http.MethodGet, "/drives/d1"}, {http.MethodPut, "/no-such-thing"}, {http.MethodPost, "/actions"}} {
		if _, err := m.route(r[0], r[1], nil); err == nil || !strings.Contains(err.Error(), invalid) {
			t.Errorf("%s %s outside the API: %v", r[0], r[1], err)
		}
	}
}
