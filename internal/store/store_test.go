package store

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"banger/internal/errdefs"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func TestOpenMigratesAndReopenIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v != len(migrations) {
		t.Fatalf("SchemaVersion = %d, want %d", v, len(migrations))
	}
	if err := s.CreateVM(ctx, testVM("id1", "one")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if v, err := s2.SchemaVersion(ctx); err != nil || v != len(migrations) {
		t.Fatalf("after reopen SchemaVersion = %d, %v; want %d", v, err, len(migrations))
	}
	var rows int
	if err := s2.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) {
		t.Fatalf("schema_migrations has %d rows after reopen, want %d (a migration ran twice?)", rows, len(migrations))
	}
	if _, err := s2.GetVM(ctx, "one"); err != nil {
		t.Fatalf("data lost across reopen: %v", err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	s, path := openTemp(t)
	future := len(migrations) + 1
	if _, err := s.db.Exec(`INSERT INTO schema_migrations(version, applied_at) VALUES(?, ?)`, future, now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err == nil {
		_ = s2.Close()
		t.Fatal("Open of a newer schema succeeded, want an error")
	}
	for _, want := range []string{"newer than this bangerd", "upgrade banger"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func testVM(id, name string) VM {
	return VM{
		ID: id, Name: name, State: "created",
		ImageName: "minimal", ImageID: "img-" + id, KernelName: "default", KernelID: "k-" + id,
		VCPU: 2, MemoryMiB: 1024, DiskSize: 8 << 30,
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
		Runtime:   Runtime{VMM: "qemu", PID: 42, PIDStart: 1234, RunDir: "/run/x", Accel: "tcg"},
	}
}

func TestVMCrud(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)

	a := testVM("id-a", "alpha")
	if err := s.CreateVM(ctx, a); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	b := testVM("id-b", "beta")
	b.CreatedAt = a.CreatedAt.Add(time.Second)
	if err := s.CreateVM(ctx, b); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}

	dup := testVM("id-c", "alpha")
	if err := s.CreateVM(ctx, dup); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("CreateVM duplicate name: err = %v, want ErrExists", err)
	}

	for _, ref := range []string{"alpha", "id-a"} {
		got, err := s.GetVM(ctx, ref)
		if err != nil {
			t.Fatalf("GetVM(%q): %v", ref, err)
		}
		if got.ID != a.ID || got.Name != a.Name || got.Runtime != a.Runtime || !got.CreatedAt.Equal(a.CreatedAt) ||
			got.DiskSize != a.DiskSize || got.KernelID != a.KernelID || !got.StartedAt.IsZero() {
			t.Fatalf("GetVM(%q) = %+v, want %+v", ref, got, a)
		}
	}
	if _, err := s.GetVM(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetVM(missing): err = %v, want ErrNotFound", err)
	}

	a.State = "running"
	a.VCPU = 4
	a.MemoryMiB = 2048
	a.StartedAt = time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)
	a.LastError = "boom"
	a.Runtime.PID = 99
	if err := s.UpdateVM(ctx, a); err != nil {
		t.Fatalf("UpdateVM: %v", err)
	}
	got, err := s.GetVM(ctx, "id-a")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != "running" || got.VCPU != 4 || got.MemoryMiB != 2048 || !got.StartedAt.Equal(a.StartedAt) ||
		got.LastError != "boom" || got.Runtime.PID != 99 {
		t.Fatalf("after UpdateVM got %+v", got)
	}
	if err := s.UpdateVM(ctx, testVM("ghost", "ghost")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("UpdateVM(missing): err = %v, want ErrNotFound", err)
	}

	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "beta" {
		t.Fatalf("ListVMs = %v, want [alpha beta] in creation order", names(list))
	}

	if err := s.DeleteVM(ctx, "id-a"); err != nil {
		t.Fatalf("DeleteVM: %v", err)
	}
	if err := s.DeleteVM(ctx, "id-a"); err != nil {
		t.Fatalf("DeleteVM twice: %v, want nil", err)
	}
	if _, err := s.GetVM(ctx, "alpha"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetVM after delete: err = %v, want ErrNotFound", err)
	}
	if list, _ := s.ListVMs(ctx); len(list) != 1 || list[0].Name != "beta" {
		t.Fatalf("ListVMs after delete = %v, want [beta]", names(list))
	}
}

func names(vms []VM) []string {
	var out []string
	for _, v := range vms {
		out = append(out, v.Name)
	}
	return out
}

func TestCorruptRuntimeIsTolerated(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	if err := s.CreateVM(ctx, testVM("id-x", "torn")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE vms SET runtime_json='{"pid": 1' WHERE id='id-x'`); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatalf("ListVMs with a corrupt runtime: %v", err)
	}
	if len(list) != 1 || list[0].ID != "id-x" {
		t.Fatalf("ListVMs = %v, want the torn VM listed", names(list))
	}
	if list[0].Runtime != (Runtime{}) {
		t.Errorf("Runtime = %+v, want empty", list[0].Runtime)
	}
	if !strings.HasPrefix(list[0].LastError, "corrupt runtime record") {
		t.Errorf("LastError = %q, want it to report the corrupt runtime record", list[0].LastError)
	}
	got, err := s.GetVM(ctx, "torn")
	if err != nil || got.LastError != list[0].LastError {
		t.Fatalf("GetVM = %+v, %v", got, err)
	}
}

func TestImages(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	im := Image{Name: "deb", ID: "sha-1", Size: 100, Source: "debootstrap", CreatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.PutImage(ctx, im, false); err != nil {
		t.Fatal(err)
	}
	if err := s.PutImage(ctx, im, false); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("PutImage duplicate: err = %v, want ErrExists", err)
	}
	im.ID = "sha-2"
	if err := s.PutImage(ctx, im, true); err != nil {
		t.Fatalf("PutImage replace: %v", err)
	}
	if err := s.PutImage(ctx, Image{Name: "alias", ID: "sha-2", Source: "import"}, false); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "deb")
	if err != nil || got.ID != "sha-2" || got.Size != 100 || !got.CreatedAt.Equal(im.CreatedAt) {
		t.Fatalf("GetImage = %+v, %v", got, err)
	}
	if _, err := s.GetImage(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetImage(missing): err = %v, want ErrNotFound", err)
	}
	list, err := s.ListImages(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "alias" || list[1].Name != "deb" {
		t.Fatalf("ListImages = %+v, %v; want alias, deb", list, err)
	}

	inUse := func(id string) bool {
		t.Helper()
		ok, err := s.ImageIDInUse(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if inUse("sha-1") {
		t.Error("sha-1 in use after being replaced")
	}
	if !inUse("sha-2") {
		t.Error("sha-2 not in use")
	}
	if err := s.DeleteImage(ctx, "deb"); err != nil {
		t.Fatal(err)
	}
	if !inUse("sha-2") {
		t.Error("sha-2 not in use while alias still maps to it")
	}
	if err := s.DeleteImage(ctx, "alias"); err != nil {
		t.Fatal(err)
	}
	if inUse("sha-2") {
		t.Error("sha-2 in use after every name was deleted")
	}
	if list, _ := s.ListImages(ctx); len(list) != 0 {
		t.Fatalf("ListImages after delete = %+v", list)
	}
}

func TestImageMetaRoundTrips(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	meta := ImageMeta{Ref: "reg.example/app:v1", Digest: "sha256:aa", Blobs: []string{"sha256:bb", "sha256:cc"}, Kernel: "k6", Parent: "deb", VM: "dev"}
	if err := s.PutImage(ctx, Image{Name: "app", ID: "sha-3", Source: "oci", CreatedAt: time.Now(), Meta: meta}, false); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "app")
	if err != nil || !reflect.DeepEqual(got.Meta, meta) {
		t.Fatalf("GetImage meta = %+v, %v", got.Meta, err)
	}
	all, err := s.ListImages(ctx)
	if err != nil || len(all) != 1 || !reflect.DeepEqual(all[0].Meta, meta) {
		t.Fatalf("ListImages = %+v, %v", all, err)
	}
}

func TestKernels(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	k := Kernel{Name: "default", ID: "k1", Version: "6.1.0", Source: "deb", SourceName: "linux-image.deb"}
	if err := s.PutKernel(ctx, k, false); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKernel(ctx, k, false); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("PutKernel duplicate: err = %v, want ErrExists", err)
	}
	if err := s.PutKernel(ctx, Kernel{Name: "custom", ID: "k2", Version: "6.6"}, false); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetKernel(ctx, "default")
	if err != nil || got != k {
		t.Fatalf("GetKernel = %+v, %v; want %+v", got, err, k)
	}
	if _, err := s.GetKernel(ctx, "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetKernel(missing): err = %v, want ErrNotFound", err)
	}
	list, err := s.ListKernels(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "custom" || list[1].Name != "default" {
		t.Fatalf("ListKernels = %+v, %v", list, err)
	}

	// A VM keeps a kernel artifact in use after its name is gone.
	v := testVM("vm1", "vm1")
	v.KernelID = "k1"
	if err := s.CreateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKernel(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetKernel(ctx, "default"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetKernel after delete: err = %v", err)
	}
	for _, tc := range []struct {
		step string
		id   string
		want bool
	}{
		{"name deleted, VM remains", "k1", true},
		{"named kernel", "k2", true},
		{"unknown", "k3", false},
	} {
		got, err := s.KernelIDInUse(ctx, tc.id)
		if err != nil || got != tc.want {
			t.Errorf("%s: KernelIDInUse(%s) = %v, %v; want %v", tc.step, tc.id, got, err, tc.want)
		}
	}
	if err := s.DeleteVM(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.KernelIDInUse(ctx, "k1"); err != nil || got {
		t.Errorf("KernelIDInUse(k1) after VM delete = %v, %v; want false", got, err)
	}
}
