// Package vmstate keeps each VM's record on disk, one directory per VM
// under the state directory, written atomically on every change. After a
// crash the records say what a previous run left behind: processes, TAPs,
// addresses, files and forge runners.
package vmstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Phase is where a VM is in its life.
type Phase string

const (
	Creating Phase = "creating" // address, TAP, runner and boot files being made
	Booting  Phase = "booting"  // VMM started; runner not ready yet
	Idle     Phase = "idle"     // runner ready, waiting for its job
	Busy     Phase = "busy"     // running its job
	Done     Phase = "done"     // ended after its job
	Failed   Phase = "failed"   // ended without a job done
)

// Terminal reports whether a VM in phase p is over.
func (p Phase) Terminal() bool { return p == Done || p == Failed }

// Record is one VM's state.
type Record struct {
	ID          string    `json:"id"`
	Pool        string    `json:"pool"`
	Phase       Phase     `json:"phase"`
	PID         int       `json:"pid,omitempty"`
	TAP         string    `json:"tap,omitempty"`
	MAC         string    `json:"mac,omitempty"`
	Address     string    `json:"address,omitempty"`
	RunnerID    string    `json:"runner_id,omitempty"`
	RunnerName  string    `json:"runner_name,omitempty"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	Ready       time.Time `json:"ready,omitzero"`
	Busy        time.Time `json:"busy,omitzero"`
	Reason      string    `json:"reason,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	ReadyUptime string    `json:"ready_uptime,omitempty"` // guest time from kernel start to runner ready
	// AgentToken authenticates the guest agent's reports; kept so a
	// restarted orchestrator can adopt the VM. It grants nothing else.
	AgentToken string `json:"agent_token,omitempty"`
	// Image is the manifest digest of the OCI image the VM boots (empty
	// for an initramfs root), so a restarted orchestrator that adopts the
	// VM leases that image again and no eviction removes it meanwhile.
	Image string `json:"image,omitempty"`
}

// Store is the directory of VM records.
type Store struct {
	dir string
}

// Open uses dir (created if needed) for VM directories.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vm state: create %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the VM's own directory.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, id) }

// Create makes the VM's directory and writes its first record.
func (s *Store) Create(r *Record) error {
	if err := os.Mkdir(s.Dir(r.ID), 0o700); err != nil {
		return fmt.Errorf("vm %s: create directory: %w", r.ID, err)
	}
	return s.Save(r)
}

// Save writes r atomically.
func (s *Store) Save(r *Record) error {
	r.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("vm %s: encode state: %w", r.ID, err)
	}
	tmp := filepath.Join(s.Dir(r.ID), ".state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir(r.ID), "state.json")); err != nil {
		return fmt.Errorf("vm %s: write state: %w", r.ID, err)
	}
	return nil
}

// Remove deletes the VM's directory and everything in it.
func (s *Store) Remove(id string) error {
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		return fmt.Errorf("vm %s: remove directory: %w", id, err)
	}
	return nil
}

// List reads every record, oldest first. A directory without a readable
// record is returned with only its ID set, so it can still be cleaned up.
func (s *Store) List() ([]*Record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("vm state: list %s: %w", s.dir, err)
	}
	var out []*Record
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r := &Record{ID: e.Name()}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name(), "state.json"))
		if err == nil {
			if err := json.Unmarshal(b, r); err != nil {
				r = &Record{ID: e.Name(), Reason: "unreadable state: " + err.Error()}
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			r.Reason = "unreadable state: " + err.Error()
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}
