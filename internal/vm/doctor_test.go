package vm

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/paths"
	"banger/internal/store"
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
	dir := t.TempDir()
	l := paths.New(filepath.Join(dir, "c"), filepath.Join(dir, "s"), filepath.Join(dir, "k"), filepath.Join(dir, "r"))
	if err := l.EnsureDaemonDirs(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(l.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, _ := config.Parse("test", nil)
	svc, err := New(Options{Store: st, Layout: l, Config: cfg, Host: config.Host{CPUs: 2, MemoryMiB: 4096},
		Driver: &fakeDriver{}, Storage: storage, StorageNote: note, Snapshots: &fakeSnapshots{dir: dir, live: map[string]bool{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}
