package vm

import (
	"context"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
)

// TestDoctorExplainsStorage: doctor says which storage backend was chosen
// and why, from the probe the daemon made, not from the host it runs on:
// device-mapper present means dm snapshots; absent means a fallback that
// names the reason dm is out and what the fallback costs.
func TestDoctorExplainsStorage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		probe  image.StorageProbe
		want   []string
		reject []string
	}{
		{
			name:   "dm present",
			probe:  image.StorageProbe{DM: true, ReflinkFS: "ext4", Overlay: true},
			want:   []string{"dm: auto: device-mapper snapshots"},
			reject: []string{"unavailable"},
		},
		{
			name:   "dm absent",
			probe:  image.StorageProbe{DMWhy: "the root helper cannot make snapshots: no dm_snapshot", ReflinkFS: "ext4", Overlay: true},
			want:   []string{"overlay: auto: qcow2 overlays", "device-mapper unavailable: the root helper cannot make snapshots: no dm_snapshot"},
			reject: []string{"dm: "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storage, note, err := image.ChooseStorage(image.StorageAuto, tc.probe)
			if err != nil {
				t.Fatal(err)
			}
			svc := newDoctorService(t, storage, note)
			var storageChecks []api.Check
			for _, c := range svc.Doctor(context.Background()).Checks {
				if c.Name == "storage" {
					storageChecks = append(storageChecks, c)
				}
			}
			if len(storageChecks) != 1 {
				t.Fatalf("doctor gave %d storage checks, want 1: %v", len(storageChecks), storageChecks)
			}
			c := storageChecks[0]
			if c.Status != "ok" {
				t.Errorf("storage status %q, want ok", c.Status)
			}
			for _, w := range tc.want {
				if !strings.Contains(c.Detail, w) {
					t.Errorf("storage detail %q lacks %q", c.Detail, w)
				}
			}
			for _, r := range tc.reject {
				if strings.Contains(c.Detail, r) {
					t.Errorf("storage detail %q has %q", c.Detail, r)
				}
			}
		})
	}
}

func newDoctorService(t *testing.T, storage image.Storage, note string) *Service {
	t.Helper()
	svc, _, _ := newTestServiceWith(t, func(o *Options, dir string) {
		o.Storage, o.StorageNote = storage, note
		o.Snapshots = &fakeSnapshots{dir: dir, live: map[string]bool{}}
	})
	return svc
}
