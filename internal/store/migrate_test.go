package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestMigrateKeepsData opens a database left at schema 1 with a VM in it:
// migrating forward keeps the VM and gives the new columns their defaults.
func TestMigrateKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`,
		migrations[0],
		`INSERT INTO schema_migrations VALUES (1, 'then')`,
		`INSERT INTO vms(id, name, state, image_name, image_id, kernel_name, kernel_id, vcpu, memory_mib, disk_size, created_at)
		 VALUES ('id1', 'old', 'stopped', 'minimal', 'abc', 'default', 'k1', 1, 512, 1024, '2026-01-01T00:00:00Z')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	st, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if v, err := st.SchemaVersion(ctx); err != nil || v != len(migrations) {
		t.Fatalf("schema version = %d, %v; want %d", v, err, len(migrations))
	}
	v, err := st.GetVM(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "id1" || v.GuestIP != "" || v.NAT {
		t.Fatalf("migrated vm = %+v", v)
	}
	v.GuestIP, v.NAT, v.HostKey = "172.16.0.2", true, "ssh-ed25519 AAAA"
	if err := st.UpdateVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetVM(ctx, "id1"); got.GuestIP != "172.16.0.2" || !got.NAT || got.HostKey != "ssh-ed25519 AAAA" {
		t.Fatalf("fields added by migrations did not round-trip: %+v", got)
	}
}
