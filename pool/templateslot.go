package pool

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// templateSlotFile, in a template build's directory, records the slot
// (vmm.Spec.Slot) its template VM runs in for as long as that VM is not
// known gone: written before the VM starts, removed once its Kill
// succeeded (or its start failed). A template build is not recorded
// otherwise, so this is what tells a restart which slot a monitor it
// cannot end may still run as (Recover's reapTemplates holds it). A
// build holding one is not pruned: the record goes with its monitor.
const templateSlotFile = "slot"

// recordTemplateSlot writes the address addr the template VM built in
// dir was allocated for its slot (as a VM's record holds its Address),
// synced: a crash of the daemon (not of the host, which no monitor
// outlives) finds it.
func recordTemplateSlot(dir string, addr netip.Addr) error {
	path := filepath.Join(dir, templateSlotFile)
	if err := warmstart.WriteSynced(path, []byte(addr.String()+"\n")); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("record the template's slot: %w", err)
	}
	return nil
}

// holdsTemplateSlot reports whether build still records its template
// VM's slot (its VM not known gone).
func holdsTemplateSlot(build string) bool {
	_, err := os.Lstat(filepath.Join(build, templateSlotFile))
	return err == nil
}

// recordedTemplateSlots are the slot addresses the builds in pool
// directory dir record, by the path of each record. A record that holds
// no address is removed (removeBadTemplateSlot): they are read at start
// only (New, Recover), before any build writes one, so none is half
// written by this run.
func (m *Manager) recordedTemplateSlots(dir string) (map[string]netip.Addr, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", templateSlotFile))
	if err != nil {
		return nil, err
	}
	slots := map[string]netip.Addr{}
	var errs []error
	for _, p := range paths {
		if filepath.Base(filepath.Dir(p)) == warmstart.CurrentLink {
			continue // the published build's link: its build is listed by its own name
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		text := strings.TrimSpace(string(b))
		addr, err := netip.ParseAddr(text)
		if err != nil {
			m.removeBadTemplateSlot(p, text, err)
			continue
		}
		slots[p] = addr
	}
	return slots, errors.Join(errs...)
}

// removeBadTemplateSlot removes the slot record at path, whose text
// did not parse as an address (err), with a warning: it stands for no
// slot that can be held, and left it would keep its build and fail
// every start. A number is a record of the previous format (the slot's
// offset in the VMs' network, written for a few hours by no release):
// its slot is not held either.
func (m *Manager) removeBadTemplateSlot(path, text string, err error) {
	msg := "warm start: a template slot record that does not parse removed; its slot, if any, is not held"
	if _, nerr := strconv.Atoi(text); nerr == nil {
		msg = "warm start: a template slot record of the previous format (a number) removed; its slot is not held"
	}
	m.log.Warn(msg, "path", path, "record", text, "err", err)
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		m.log.Error("warm start: remove a template slot record", "path", path, "err", rerr)
	}
}

// holdTemplateSlots keeps the slots pool's template builds record from
// every VM: template VM id's monitor could not be ended and may run as
// their user. The records stay for the next start.
func (m *Manager) holdTemplateSlots(pool, id string) []error {
	if m.d.TemplateDir == "" {
		return nil
	}
	slots, err := m.recordedTemplateSlots(filepath.Join(m.d.TemplateDir, pool))
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("template vm %s of pool %s: %w", id, pool, err))
	}
	for _, addr := range slots {
		if err := m.d.Alloc.Reserve(addr, id); err != nil {
			errs = append(errs, fmt.Errorf("hold the slot of template vm %s of pool %s: %w", id, pool, err))
			continue
		}
		m.log.Warn("warm start: a template VM's slot held: its monitor may still run", "pool", pool, "vm", id, "address", addr)
	}
	return errs
}

// dropTemplateSlots removes the slot records of pool's template builds:
// its template VM is known gone.
func (m *Manager) dropTemplateSlots(pool string) {
	if m.d.TemplateDir == "" {
		return
	}
	slots, _ := m.recordedTemplateSlots(filepath.Join(m.d.TemplateDir, pool))
	for p := range slots {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.log.Error("warm start: remove a gone template VM's slot record", "pool", pool, "path", p, "err", err)
		}
	}
}
