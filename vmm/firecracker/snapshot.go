package firecracker

import (
	"context"
	"net/http"
)

// The snapshot calls a warm start makes (Firecracker 1.17): a template
// microVM is paused and snapshotted; each VM is a fresh Firecracker
// process that loads it (nothing else configured first but the logger
// and metrics), with its own TAP through network_overrides, and resumes.

// SnapshotCreate is the body of PUT /snapshot/create. Paths are as the
// VMM sees them.
type SnapshotCreate struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"` // "Full" (default) or "Diff"
}

// NetworkOverride gives a restored interface its own TAP.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// MemoryBackend is where a load takes guest memory from.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // "File" or "Uffd"
	BackendPath string `json:"backend_path"`
}

// SnapshotLoad is the body of PUT /snapshot/load: the memory through
// mem_backend (mem_file_path is deprecated), never both.
type SnapshotLoad struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       MemoryBackend     `json:"mem_backend"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	ClockRealtime    bool              `json:"clock_realtime,omitempty"`
}

type vmState struct {
	State string `json:"state"`
}

// Pause pauses a running microVM (PATCH /vm).
func (c *Client) Pause(ctx context.Context) error {
	return c.call(ctx, http.MethodPatch, "/vm", vmState{State: "Paused"})
}

// Resume resumes a paused microVM (PATCH /vm).
func (c *Client) Resume(ctx context.Context) error {
	return c.call(ctx, http.MethodPatch, "/vm", vmState{State: "Resumed"})
}

// CreateSnapshot snapshots a paused microVM.
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	return c.put(ctx, "/snapshot/create", s)
}

// LoadSnapshot loads a snapshot into a fresh Firecracker process.
func (c *Client) LoadSnapshot(ctx context.Context, l SnapshotLoad) error {
	return c.put(ctx, "/snapshot/load", l)
}
