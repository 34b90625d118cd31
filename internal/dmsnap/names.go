package dmsnap

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

const (
	// NamePrefix starts the name of every dm device dmsnap makes. A
	// matching name alone is not proof of ownership (see UUIDPrefix).
	NamePrefix = "banger-"
	// UUIDPrefix starts the dm uuid of every device dmsnap makes. The uuid
	// is recorded in the journal before the device exists and devices are
	// removed by uuid, so a device someone else named banger-* is never
	// removed.
	UUIDPrefix = "banger-dmsnap-"
	// SectorSize is the unit of dm tables.
	SectorSize = 512
	// DefaultChunkSectors is the snapshot chunk size: 8 sectors, 4 KiB,
	// the page size, so a guest page write copies one chunk.
	DefaultChunkSectors = 8
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// ValidateID checks a VM id: 1 to 64 characters from [A-Za-z0-9-], the
// same rule as privop's vm_id, so the dm name and uuid stay short, need no
// quoting anywhere and cannot hold a path separator.
func ValidateID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("invalid vm id %q: want 1-64 characters from [A-Za-z0-9-]", id)
	}
	return nil
}

// DeviceName is the dm device name of a VM: banger-<id>.
func DeviceName(id string) (string, error) {
	if err := ValidateID(id); err != nil {
		return "", err
	}
	return NamePrefix + id, nil
}

// IDFromName returns the VM id of a dm name made by DeviceName.
func IDFromName(name string) (string, bool) {
	id, ok := strings.CutPrefix(name, NamePrefix)
	if !ok || ValidateID(id) != nil {
		return "", false
	}
	return id, true
}

// deviceUUID builds the uuid of one incarnation of a VM's device: the
// prefix, the id and a token, so two incarnations never share a uuid.
func deviceUUID(id, token string) string {
	return UUIDPrefix + id + "-" + token
}

// newToken returns 16 random hex characters.
func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
