package pool

import (
	"errors"
	"syscall"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/netplan"
)

// Causes of a host-resource shortage, the bounded label set of the
// shortage metric.
const (
	ShortDisk      = "disk"      // ENOSPC or EDQUOT: the state directory's file system is full
	ShortMemory    = "memory"    // ENOMEM
	ShortAddresses = "addresses" // every address of the VM network is in use
)

// shortageOf tells a VM that failed for lack of a host resource from one
// that failed on its own (a guest, a forge, a monitor): the cause, or ""
// when err is not a shortage. A shortage says nothing about the next VM
// but that it needs room, so it sizes the next attempt instead of backing
// the pool off.
func shortageOf(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ShortDisk
	case errors.Is(err, syscall.ENOMEM):
		return ShortMemory
	case errors.Is(err, netplan.ErrNoAddress):
		return ShortAddresses
	}
	return ""
}

// short records that a VM of p could not be made for lack of cause: until
// a VM of p becomes ready, p starts one VM at a time (then one more at
// once with each VM ready, see pool.ramp), and the next once
// the one before ended or one reconcile period passed, so the host is
// used as far as it has room, without a back-off and without a spin.
func (m *Manager) short(p *pool, cause string, err error) {
	m.obs.HostShortage(p.cfg.Name, cause)
	m.mu.Lock()
	first := p.shortOf == ""
	p.shortOf = cause
	p.ramp = 1
	p.failures = 0
	p.notBefore = time.Now().Add(m.d.Interval)
	m.mu.Unlock()
	if first {
		p.log.Warn("host resource exhausted: starting one vm at a time until one boots", "cause", cause, "err", err)
	} else {
		p.log.Debug("host resource still exhausted", "cause", cause, "err", err)
	}
}

// freed is told that a VM of p that had held host resources ended: when p
// is short of them, the next VM may start at once.
func (m *Manager) freed(p *pool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.shortOf != "" {
		p.notBefore = time.Now()
	}
}
