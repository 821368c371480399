package firecrackerdouble

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Snapshots, held to Firecracker 1.17's description and phase rules:
// /snapshot/create is post-boot only and wants the microVM Paused
// (PATCH /vm); /snapshot/load is accepted only on a fresh process, before
// any resource but the logger and metrics is configured, with exactly one
// of mem_file_path and mem_backend, and files that exist; each network
// override names an interface the snapshot has and a TAP that attaches;
// a vsock device is bound again at its socket path (see vsock.go). The double's
// snapshot is its own: the machine's configuration as JSON in the
// snapshot file, which a load reads back, and a memory file of the
// guest's memory size (sparse zeros); it restores no guest.

// Firecracker's LoadSnapshotNotAllowed; the other messages say what
// Firecracker refuses, not necessarily in its words.
const (
	faultLoadNotAllowed = "Loading a microVM snapshot not allowed after configuring boot-specific resources."
	faultNotPaused      = "Cannot create a snapshot: the microVM is not paused."
	faultMemExactlyOne  = "Exactly one of mem_file_path and mem_backend must be given."
)

type snapshotCreate struct {
	MemFilePath  string `json:"mem_file_path"`
	SnapshotPath string `json:"snapshot_path"`
	SnapshotType string `json:"snapshot_type"`
}

type snapshotLoad struct {
	SnapshotPath string  `json:"snapshot_path"`
	MemFilePath  *string `json:"mem_file_path"`
	MemBackend   *struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	} `json:"mem_backend"`
	ResumeVM         bool `json:"resume_vm"`
	NetworkOverrides []struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
	} `json:"network_overrides"`
}

// snapshotOp performs PATCH /vm, PUT /snapshot/create or /snapshot/load.
func (s *Server) snapshotOp(key string, body []byte) error {
	switch key {
	case "PATCH /vm":
		return s.patchVM(body)
	case "PUT /snapshot/create":
		return s.createSnapshot(body)
	}
	return s.loadSnapshot(body)
}

// patchVM pauses or resumes a started microVM.
func (s *Server) patchVM(body []byte) error {
	var v struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	s.paused = v.State == "Paused"
	return nil
}

func (s *Server) createSnapshot(body []byte) error {
	if !s.paused {
		return errors.New(faultNotPaused)
	}
	var c snapshotCreate
	if err := json.Unmarshal(body, &c); err != nil {
		return err
	}
	state, _ := json.Marshal(s.vm)
	if err := os.WriteFile(s.hostPath(c.SnapshotPath), state, 0o600); err != nil {
		return fmt.Errorf("Create snapshot error: %w", err)
	}
	// The memory file is the guest's memory, whole (a Full snapshot):
	// here sparse, all zeros.
	if err := os.WriteFile(s.hostPath(c.MemFilePath), nil, 0o600); err != nil {
		return fmt.Errorf("Create snapshot error: %w", err)
	}
	if err := os.Truncate(s.hostPath(c.MemFilePath), int64(s.vm.MemoryMiB)<<20); err != nil {
		return fmt.Errorf("Create snapshot error: %w", err)
	}
	return nil
}

func (s *Server) loadSnapshot(body []byte) error {
	if s.configured {
		return errors.New(faultLoadNotAllowed)
	}
	var l snapshotLoad
	if err := json.Unmarshal(body, &l); err != nil {
		return err
	}
	mem := ""
	switch {
	case (l.MemFilePath == nil) == (l.MemBackend == nil):
		return errors.New(faultMemExactlyOne)
	case l.MemFilePath != nil:
		mem = *l.MemFilePath
	default:
		mem = l.MemBackend.BackendPath
	}
	b, err := os.ReadFile(s.hostPath(l.SnapshotPath))
	if err != nil {
		return fmt.Errorf("Load snapshot error: Cannot open snapshot file: %w", err)
	}
	if err := s.openable(mem, false); err != nil {
		return fmt.Errorf("Load snapshot error: Cannot open the memory file: %w", err)
	}
	var vm BootConfig
	if err := json.Unmarshal(b, &vm); err != nil {
		return fmt.Errorf("Load snapshot error: Cannot deserialize the microVM state: %w", err)
	}
	for _, o := range l.NetworkOverrides {
		i := slices.IndexFunc(vm.NICs, func(n NIC) bool { return n.ID == o.IfaceID })
		if i < 0 {
			return fmt.Errorf("Load snapshot error: network override for %q: the snapshot has no such interface", o.IfaceID)
		}
		if err := s.opt.OpenTAP(o.HostDevName); err != nil {
			return fmt.Errorf("Load snapshot error: Open tap device failed: %w", err)
		}
		vm.NICs[i].TAP = o.HostDevName
	}
	if vm.Vsock != nil {
		// The device comes back with the socket path it was given.
		if err := s.listenVsock(vm.Vsock); err != nil {
			return fmt.Errorf("Load snapshot error: %w", err)
		}
	}
	s.vm, s.hasKernel, s.paused = vm, true, !l.ResumeVM
	s.isStarted = true
	close(s.started)
	return nil
}
