// Package store owns bangerd's state database: VMs (with their persisted
// runtime handles), images and kernels, in SQLite (WAL mode) with
// forward-only migrations. It knows nothing about how VMs run.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver

	"banger/internal/errdefs"
)

// Store is the state database.
type Store struct {
	db *sql.DB
}

// migrations are applied in order and never edited once released: a new
// schema change is a new entry.
var migrations = []string{
	// 1: baseline
	`CREATE TABLE vms (
		id TEXT PRIMARY KEY,
		name TEXT NOT NULL UNIQUE,
		state TEXT NOT NULL,
		image_name TEXT NOT NULL,
		image_id TEXT NOT NULL,
		kernel_name TEXT NOT NULL,
		kernel_id TEXT NOT NULL,
		vcpu INTEGER NOT NULL,
		memory_mib INTEGER NOT NULL,
		disk_size INTEGER NOT NULL,
		created_at TEXT NOT NULL,
		started_at TEXT NOT NULL DEFAULT '',
		last_error TEXT NOT NULL DEFAULT '',
		runtime_json TEXT NOT NULL DEFAULT '{}'
	);
	CREATE TABLE images (
		name TEXT PRIMARY KEY,
		id TEXT NOT NULL,
		size INTEGER NOT NULL,
		source TEXT NOT NULL,
		created_at TEXT NOT NULL
	);
	CREATE TABLE kernels (
		name TEXT PRIMARY KEY,
		id TEXT NOT NULL,
		version TEXT NOT NULL,
		source TEXT NOT NULL,
		source_name TEXT NOT NULL,
		created_at TEXT NOT NULL
	);`,
	// 2: guest networking
	`ALTER TABLE vms ADD COLUMN guest_ip TEXT NOT NULL DEFAULT '';
	ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;`,
	// 3: per-VM SSH host key (public, authorized_keys form)
	`ALTER TABLE vms ADD COLUMN host_key TEXT NOT NULL DEFAULT '';`,
	// 4: the workspace copied into the VM
	`ALTER TABLE vms ADD COLUMN workspace_json TEXT NOT NULL DEFAULT '{}';`,
	// 5: image provenance (registry digest and blobs, preferred kernel, lineage)
	`ALTER TABLE images ADD COLUMN meta_json TEXT NOT NULL DEFAULT '{}';`,
}

// Open opens (creating if needed) the database at path and migrates it.
func Open(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state db: %w", err)
	}
	// One writer at a time; SQLite serialises writes anyway and this keeps
	// busy errors out of the picture.
	db.SetMaxOpenConns(1)
	s := &Store{db: db}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// SchemaVersion reports the applied migration count.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version),0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate state db: %w", err)
	}
	cur, err := s.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate state db: %w", err)
	}
	if cur > len(migrations) {
		return fmt.Errorf("migrate state db: schema version %d is newer than this bangerd (%d); upgrade banger", cur, len(migrations))
	}
	for v := cur + 1; v <= len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate state db to %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate state db to %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES(?, ?)`, v, now()); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate state db to %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate state db to %d: %w", v, err)
		}
	}
	return nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// Runtime is what bangerd must remember about a running VM to find it again
// after a restart.
type Runtime struct {
	VMM         string `json:"vmm,omitempty"`
	PID         int    `json:"pid,omitempty"`
	PIDStart    uint64 `json:"pid_start,omitempty"` // /proc/<pid>/stat starttime, guards against pid reuse
	RunDir      string `json:"run_dir,omitempty"`
	AgentSock   string `json:"agent_sock,omitempty"`
	AgentPort   uint32 `json:"agent_port,omitempty"` // vsock port behind AgentSock (Firecracker)
	ConsoleSock string `json:"console_sock,omitempty"`
	Accel       string `json:"accel,omitempty"`
	Tap         string `json:"tap,omitempty"`
	JailID      string `json:"jail_id,omitempty"` // the VMM's jail, to clean up once it exits
}

// VM is a stored VM record.
type VM struct {
	ID         string
	Name       string
	State      string
	ImageName  string
	ImageID    string
	KernelName string
	KernelID   string
	VCPU       int
	MemoryMiB  int
	DiskSize   int64
	CreatedAt  time.Time
	StartedAt  time.Time
	LastError  string
	Runtime    Runtime
	GuestIP    string // allocated at create, kept across restarts
	NAT        bool
	HostKey    string // the VM's SSH host public key, authorized_keys form
	Workspace  Workspace
}

// Workspace records the git work tree copied into a VM.
type Workspace struct {
	HostPath string `json:"host_path,omitempty"`
	GuestDir string `json:"guest_dir,omitempty"`
	Head     string `json:"head,omitempty"`
}

const vmCols = `id, name, state, image_name, image_id, kernel_name, kernel_id, vcpu, memory_mib, disk_size, created_at, started_at, last_error, runtime_json, guest_ip, nat, host_key, workspace_json`

type scanner interface{ Scan(dest ...any) error }

func scanVM(r scanner) (VM, error) {
	var v VM
	var created, started, rt, ws string
	if err := r.Scan(&v.ID, &v.Name, &v.State, &v.ImageName, &v.ImageID, &v.KernelName, &v.KernelID, &v.VCPU, &v.MemoryMiB, &v.DiskSize, &created, &started, &v.LastError, &rt, &v.GuestIP, &v.NAT, &v.HostKey, &ws); err != nil {
		return v, err
	}
	v.CreatedAt = parseTime(created)
	v.StartedAt = parseTime(started)
	_ = json.Unmarshal([]byte(ws), &v.Workspace) // a bad record only loses the default cwd
	if err := json.Unmarshal([]byte(rt), &v.Runtime); err != nil {
		// A torn runtime record must not hide the VM: keep it with empty
		// handles so reconcile can still tear it down by its id.
		v.Runtime = Runtime{}
		v.LastError = "corrupt runtime record: " + err.Error()
	}
	return v, nil
}

// CreateVM inserts v; the name must be unused.
func (s *Store) CreateVM(ctx context.Context, v VM) error {
	rt, _ := json.Marshal(v.Runtime)
	ws, _ := json.Marshal(v.Workspace)
	_, err := s.db.ExecContext(ctx, `INSERT INTO vms(`+vmCols+`) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		v.ID, v.Name, v.State, v.ImageName, v.ImageID, v.KernelName, v.KernelID, v.VCPU, v.MemoryMiB, v.DiskSize,
		fmtTime(v.CreatedAt), fmtTime(v.StartedAt), v.LastError, string(rt), v.GuestIP, v.NAT, v.HostKey, string(ws))
	if isUnique(err) {
		return errdefs.Exists("vm %q already exists", v.Name)
	}
	if err != nil {
		return fmt.Errorf("insert vm: %w", err)
	}
	return nil
}

// UpdateVM writes every mutable field of v.
func (s *Store) UpdateVM(ctx context.Context, v VM) error {
	rt, _ := json.Marshal(v.Runtime)
	ws, _ := json.Marshal(v.Workspace)
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET state=?, vcpu=?, memory_mib=?, disk_size=?, started_at=?, last_error=?, runtime_json=?, guest_ip=?, nat=?, host_key=?, workspace_json=? WHERE id=?`,
		v.State, v.VCPU, v.MemoryMiB, v.DiskSize, fmtTime(v.StartedAt), v.LastError, string(rt), v.GuestIP, v.NAT, v.HostKey, string(ws), v.ID)
	if err != nil {
		return fmt.Errorf("update vm: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("vm %q not found", v.Name)
	}
	return nil
}

// GetVM finds a VM by name or id.
func (s *Store) GetVM(ctx context.Context, ref string) (VM, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmCols+` FROM vms WHERE name=? OR id=?`, ref, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return v, errdefs.NotFound("vm %q not found", ref)
	}
	if err != nil {
		return v, fmt.Errorf("get vm: %w", err)
	}
	return v, nil
}

// ListVMs returns every VM ordered by creation.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmCols+` FROM vms ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, fmt.Errorf("list vms: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVM removes the record; deleting a missing VM is not an error.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE id=?`, id); err != nil {
		return fmt.Errorf("delete vm: %w", err)
	}
	return nil
}

// Image is a stored image name -> content id mapping.
type Image struct {
	Name      string
	ID        string
	Size      int64
	Source    string
	CreatedAt time.Time
	Meta      ImageMeta
	// Note is not stored: resolution may attach a message for the user
	// (such as a fallback to the minimal image).
	Note string
}

// ImageMeta is what is known of where an image came from.
type ImageMeta struct {
	Ref    string   `json:"ref,omitempty"`    // registry reference it was pulled from
	Digest string   `json:"digest,omitempty"` // manifest digest
	Blobs  []string `json:"blobs,omitempty"`  // cached blobs it was built from (kept by cache prune)
	Kernel string   `json:"kernel,omitempty"` // kernel to boot it with when a VM names none
	Parent string   `json:"parent,omitempty"` // the image a committed VM was created from
	VM     string   `json:"vm,omitempty"`     // the VM it was committed from
}

// PutImage inserts or (with replace) overwrites an image name.
func (s *Store) PutImage(ctx context.Context, im Image, replace bool) error {
	q := `INSERT INTO images(name, id, size, source, created_at, meta_json) VALUES(?,?,?,?,?,?)`
	if replace {
		q = `INSERT OR REPLACE INTO images(name, id, size, source, created_at, meta_json) VALUES(?,?,?,?,?,?)`
	}
	meta, _ := json.Marshal(im.Meta)
	_, err := s.db.ExecContext(ctx, q, im.Name, im.ID, im.Size, im.Source, fmtTime(im.CreatedAt), string(meta))
	if isUnique(err) {
		return errdefs.Exists("image %q already exists", im.Name)
	}
	if err != nil {
		return fmt.Errorf("insert image: %w", err)
	}
	return nil
}

// GetImage finds an image by name.
func (s *Store) GetImage(ctx context.Context, name string) (Image, error) {
	var im Image
	var created, meta string
	err := s.db.QueryRowContext(ctx, `SELECT name, id, size, source, created_at, meta_json FROM images WHERE name=?`, name).
		Scan(&im.Name, &im.ID, &im.Size, &im.Source, &created, &meta)
	if errors.Is(err, sql.ErrNoRows) {
		return im, errdefs.NotFound("image %q not found", name)
	}
	if err != nil {
		return im, fmt.Errorf("get image: %w", err)
	}
	im.CreatedAt = parseTime(created)
	_ = json.Unmarshal([]byte(meta), &im.Meta) // a bad record only loses provenance
	return im, nil
}

// ListImages returns every image by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, id, size, source, created_at, meta_json FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		var im Image
		var created, meta string
		if err := rows.Scan(&im.Name, &im.ID, &im.Size, &im.Source, &created, &meta); err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		im.CreatedAt = parseTime(created)
		_ = json.Unmarshal([]byte(meta), &im.Meta)
		out = append(out, im)
	}
	return out, rows.Err()
}

// DeleteImage removes an image name.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE name=?`, name); err != nil {
		return fmt.Errorf("delete image: %w", err)
	}
	return nil
}

// ImageIDInUse reports whether any image name still maps to content id.
func (s *Store) ImageIDInUse(ctx context.Context, id string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM images WHERE id=?`, id).Scan(&n)
	return n > 0, err
}

// Kernel is a stored kernel name -> artifact mapping.
type Kernel struct {
	Name       string
	ID         string
	Version    string
	Source     string
	SourceName string
	CreatedAt  time.Time
}

// PutKernel inserts or (with replace) overwrites a kernel name.
func (s *Store) PutKernel(ctx context.Context, k Kernel, replace bool) error {
	q := `INSERT INTO kernels(name, id, version, source, source_name, created_at) VALUES(?,?,?,?,?,?)`
	if replace {
		q = `INSERT OR REPLACE INTO kernels(name, id, version, source, source_name, created_at) VALUES(?,?,?,?,?,?)`
	}
	_, err := s.db.ExecContext(ctx, q, k.Name, k.ID, k.Version, k.Source, k.SourceName, fmtTime(k.CreatedAt))
	if isUnique(err) {
		return errdefs.Exists("kernel %q already exists", k.Name)
	}
	if err != nil {
		return fmt.Errorf("insert kernel: %w", err)
	}
	return nil
}

// GetKernel finds a kernel by name.
func (s *Store) GetKernel(ctx context.Context, name string) (Kernel, error) {
	var k Kernel
	var created string
	err := s.db.QueryRowContext(ctx, `SELECT name, id, version, source, source_name, created_at FROM kernels WHERE name=?`, name).
		Scan(&k.Name, &k.ID, &k.Version, &k.Source, &k.SourceName, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return k, errdefs.NotFound("kernel %q not found", name)
	}
	if err != nil {
		return k, fmt.Errorf("get kernel: %w", err)
	}
	k.CreatedAt = parseTime(created)
	return k, nil
}

// ListKernels returns every kernel by name.
func (s *Store) ListKernels(ctx context.Context) ([]Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, id, version, source, source_name, created_at FROM kernels ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	defer rows.Close()
	var out []Kernel
	for rows.Next() {
		var k Kernel
		var created string
		if err := rows.Scan(&k.Name, &k.ID, &k.Version, &k.Source, &k.SourceName, &created); err != nil {
			return nil, fmt.Errorf("list kernels: %w", err)
		}
		k.CreatedAt = parseTime(created)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKernel removes a kernel name.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM kernels WHERE name=?`, name); err != nil {
		return fmt.Errorf("delete kernel: %w", err)
	}
	return nil
}

// KernelIDInUse reports whether any kernel name or VM still uses artifact id.
func (s *Store) KernelIDInUse(ctx context.Context, id string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM kernels WHERE id=?) + (SELECT COUNT(*) FROM vms WHERE kernel_id=?)`, id, id).Scan(&n)
	return n > 0, err
}
