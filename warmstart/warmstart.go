// Package warmstart keeps each pool's template: the memory and device state
// of a VM booted until its agent waits for its identity, saved by the VMM
// (QEMU's migration stream, Firecracker's snapshot), from which a pool's VMs
// are restored instead of booted. It exists so the decision "restore or
// boot cold, and why" lives in one place: a template is used only when it
// was made by the same VMM version, kernel, image and agent as the VM about
// to start and its state file is whole; anything else is a Fallback with a
// reason the pool logs and counts, never a broken VM handed to a job. It
// also keeps the layout of a pool's template directory (builds.go): each
// build in a directory of its own, published by a link replaced in one
// rename, so a restore never mixes two builds' files.
package warmstart

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Key is what a template was made from. A template restores a VM only
// when every field equals the VM's own: the QEMU migration stream is only
// promised to load into the same QEMU version, and a guest kernel, root
// or agent other than the one booted would run in memory saved from
// another.
type Key struct {
	VMM    string `json:"vmm"`    // the monitor and its version, e.g. "qemu 7.2.22"
	Kernel string `json:"kernel"` // sha256 of the kernel image
	Image  string `json:"image"`  // sha256 of the boot archive, or the OCI image's digest
	Agent  string `json:"agent"`  // sha256 of the agent binary
}

// FileDigest is the sha256 of a file, as Key's fields hold it.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("warmstart: digest of %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("warmstart: digest of %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Reason is why a VM of a warm-start pool is not restored (it boots
// cold, or, for ReasonRestoreKillFailed, fails): a bounded set, used as
// a metric label.
type Reason string

const (
	ReasonNoTemplate     Reason = "no_template"
	ReasonVMMMismatch    Reason = "vmm_mismatch"
	ReasonKernelMismatch Reason = "kernel_mismatch"
	ReasonImageMismatch  Reason = "image_mismatch"
	ReasonAgentMismatch  Reason = "agent_mismatch"
	ReasonStateMissing   Reason = "state_missing"
	ReasonStateTruncated Reason = "state_truncated"
	ReasonBadManifest    Reason = "bad_manifest"
	ReasonRestoreFailed  Reason = "restore_failed"
	// ReasonIdentityRefused: the restored guest read its identity and
	// could not apply it (its console says why).
	ReasonIdentityRefused Reason = "identity_refused"
	// ReasonRestoreKillFailed: a restore failed and its monitor could
	// not be ended. The VM does not boot cold (that monitor may still
	// run as its slot's user): it fails.
	ReasonRestoreKillFailed Reason = "restore_kill_failed"
)

// Reasons is every Reason, for metrics that want their labels known.
var Reasons = []Reason{ReasonNoTemplate, ReasonVMMMismatch, ReasonKernelMismatch,
	ReasonImageMismatch, ReasonAgentMismatch, ReasonStateMissing,
	ReasonStateTruncated, ReasonBadManifest, ReasonRestoreFailed, ReasonIdentityRefused, ReasonRestoreKillFailed}

// Fallback is the error of a template that must not be restored: the VM
// boots cold. Detail says what was found, for the log line.
type Fallback struct {
	Reason Reason
	Detail string
}

func (f *Fallback) Error() string {
	return fmt.Sprintf("warm start: cold boot (%s): %s", f.Reason, f.Detail)
}

// AsFallback is err's Fallback; for a guest's refusal of its identity
// (vmm.ErrIdentityRefused) one with ReasonIdentityRefused; or one with
// ReasonRestoreFailed for any other error (a restore the VMM refused).
// It is the one place an error is given its reason.
func AsFallback(err error) *Fallback {
	var f *Fallback
	if errors.As(err, &f) {
		return f
	}
	if errors.Is(err, vmm.ErrIdentityRefused) {
		return &Fallback{Reason: ReasonIdentityRefused, Detail: err.Error()}
	}
	return &Fallback{Reason: ReasonRestoreFailed, Detail: err.Error()}
}

// File names inside a template's directory.
const (
	ManifestFile = "template.json"
	StateFile    = "state"
	// MemoryFile is the template's guest RAM when the VMM keeps it in a
	// file (vmm.Spec.MemoryFile: QEMU's RAM while it runs, Firecracker's
	// snapshot memory), its state then device state only.
	MemoryFile = "memory"
)

// Template is a pool's saved VM, checked whole and made from the Key it
// was opened with.
type Template struct {
	Dir   string
	Key   Key
	State string // the saved state (QEMU migration stream)
	// Memory is the template's guest RAM file (MemoryFile), which its
	// restores map; "" when the state holds the RAM.
	Memory string
}

// manifest is written last, after the state file (and the memory file,
// if any) is complete and synced: a template without one is no template.
type manifest struct {
	Key       Key   `json:"key"`
	StateSize int64 `json:"state_size"`
	// MemorySize is MemoryFile's size; 0: the template has none.
	MemorySize int64 `json:"memory_size,omitempty"`
}

// Open returns the template in dir if it may restore a VM whose Key is
// want, or a *Fallback saying why not.
func Open(dir string, want Key) (*Template, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &Fallback{Reason: ReasonNoTemplate, Detail: "no template in " + dir}
	}
	if err != nil {
		return nil, &Fallback{Reason: ReasonBadManifest, Detail: err.Error()}
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &Fallback{Reason: ReasonBadManifest, Detail: fmt.Sprintf("%s: %v", ManifestFile, err)}
	}
	for _, c := range []struct {
		r         Reason
		what      string
		have, got string
	}{
		{ReasonVMMMismatch, "VMM", m.Key.VMM, want.VMM},
		{ReasonKernelMismatch, "kernel", m.Key.Kernel, want.Kernel},
		{ReasonImageMismatch, "image", m.Key.Image, want.Image},
		{ReasonAgentMismatch, "agent", m.Key.Agent, want.Agent},
	} {
		if c.have != c.got {
			return nil, &Fallback{Reason: c.r, Detail: fmt.Sprintf("template made with %s %q, this VM has %q", c.what, c.have, c.got)}
		}
	}
	t := &Template{Dir: dir, Key: m.Key, State: filepath.Join(dir, StateFile)}
	if err := wholeFile(t.State, m.StateSize); err != nil {
		return nil, err
	}
	if m.MemorySize > 0 {
		t.Memory = filepath.Join(dir, MemoryFile)
		if err := wholeFile(t.Memory, m.MemorySize); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// wholeFile is nil when path is size bytes, else a Fallback: the file
// is missing (ReasonStateMissing) or not what the template saved
// (ReasonStateTruncated). The memory file is part of the state.
func wholeFile(path string, size int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return &Fallback{Reason: ReasonStateMissing, Detail: err.Error()}
	}
	if st.Size() != size {
		return &Fallback{Reason: ReasonStateTruncated, Detail: fmt.Sprintf("%s is %d bytes, the template saved %d", path, st.Size(), size)}
	}
	return nil
}

// Seal records a state file just saved in dir, with the memory file
// beside it if the VMM wrote one, as the template of key: both are
// synced first, then the manifest is written under a temporary name and
// renamed, so a crash leaves no template or a whole one.
func Seal(dir string, key Key) error {
	stateSize, err := syncFile(filepath.Join(dir, StateFile))
	if err != nil {
		return err
	}
	memSize, err := syncFile(filepath.Join(dir, MemoryFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		memSize = 0 // the state holds the RAM
	case err != nil:
		return err
	case memSize == 0:
		return fmt.Errorf("warmstart: seal template: %s is empty", filepath.Join(dir, MemoryFile))
	}
	b, err := json.Marshal(manifest{Key: key, StateSize: stateSize, MemorySize: memSize})
	if err != nil {
		return fmt.Errorf("warmstart: seal template: %w", err)
	}
	tmp := filepath.Join(dir, ManifestFile+".tmp")
	if err := WriteSynced(tmp, b); err != nil {
		return fmt.Errorf("warmstart: seal template: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestFile)); err != nil {
		return fmt.Errorf("warmstart: seal template: %w", err)
	}
	return nil
}

// syncFile syncs path and returns its size.
func syncFile(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("warmstart: seal template: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return 0, fmt.Errorf("warmstart: seal template %s: %w", path, err)
	}
	return st.Size(), nil
}

// WriteSynced writes b to path (created 0600, or truncated) and syncs
// it before closing: a file a crash of the daemon must find whole (a
// manifest renamed into place and then published, a template's slot
// record) is not left empty. On an error path may hold part of b.
func WriteSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
