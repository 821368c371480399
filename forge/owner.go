package forge

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// VMIDLen is the length of a VM id: 12 lowercase hex digits (NewVMID).
// Ownership rests on it being fixed: see Owner.
const VMIDLen = 12

// NewVMID returns a fresh VM id, of the one format Owner parses.
func NewVMID() string {
	var b [VMIDLen / 2]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsVMID reports whether s is exactly a VM id as NewVMID makes them.
func IsVMID(s string) bool {
	if len(s) != VMIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hostIDPattern is what a host id may be (config enforces the same).
var hostIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// Owner is the one place that says which forge runners a host's
// orchestrator made: it names each VM's runner "fa-<host id>-<vm id>" and
// owns a name only if it parses back exactly: the prefix, its own host id,
// a '-', then exactly a VM id (VMIDLen hex digits) and nothing more.
//
// A prefix match would not do: host "ci" would take "fa-ci-2-…", the
// runners of host "ci-2", for its own. With the VM id of fixed length the
// host part of a name is fixed too (its length is the name's minus the
// rest), so no two host ids own one name, whatever their characters.
//
// Drivers are handed an Owner, never a prefix, so none can sweep by
// prefix. The zero Owner owns nothing.
type Owner struct {
	prefix string // "fa-<host id>-"; empty: the zero Owner
}

// NewOwner is the owner of host hostID's runners.
func NewOwner(hostID string) (Owner, error) {
	if !hostIDPattern.MatchString(hostID) {
		return Owner{}, fmt.Errorf("host_id %q: not a host id (1-20 characters of a-z, 0-9 and '-', starting with a letter or digit)", hostID)
	}
	return Owner{prefix: "fa-" + hostID + "-"}, nil
}

// RunnerName is the name of VM vmID's runner.
func (o Owner) RunnerName(vmID string) string { return o.prefix + vmID }

// Owns reports whether the runner named name is one of this host's: the
// runner of one of its VMs (or of a VM of a previous run of it).
func (o Owner) Owns(name string) bool {
	if o.prefix == "" {
		return false
	}
	rest, ok := strings.CutPrefix(name, o.prefix)
	return ok && IsVMID(rest)
}
