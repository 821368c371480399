package netplan

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Allocator hands out VM addresses from a prefix, never one in use. The
// orchestrator seeds it from the VMs it finds on disk at start, so the
// addresses of live VMs are never handed out twice.
type Allocator struct {
	prefix  netip.Prefix
	gateway netip.Addr
	mu      sync.Mutex
	used    map[netip.Addr]string // address -> VM id
}

// NewAllocator allocates from prefix, skipping its network and broadcast
// addresses and the gateway.
func NewAllocator(prefix netip.Prefix, gateway netip.Addr) *Allocator {
	return &Allocator{prefix: prefix.Masked(), gateway: gateway, used: map[netip.Addr]string{}}
}

// Reserve marks addr as held by vmID (used when adopting state from disk).
func (a *Allocator) Reserve(addr netip.Addr, vmID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.prefix.Contains(addr) {
		return fmt.Errorf("address %s of vm %s is outside %s", addr, vmID, a.prefix)
	}
	if owner, ok := a.used[addr]; ok && owner != vmID {
		return fmt.Errorf("address %s of vm %s is already held by vm %s", addr, vmID, owner)
	}
	a.used[addr] = vmID
	return nil
}

// Allocate returns the lowest free address for vmID.
func (a *Allocator) Allocate(vmID string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	last := lastAddr(a.prefix)
	for ip := a.prefix.Addr().Next(); ip.IsValid() && ip.Less(last); ip = ip.Next() {
		if ip == a.gateway {
			continue
		}
		if _, ok := a.used[ip]; !ok {
			a.used[ip] = vmID
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w in %s: all %d in use", ErrNoAddress, a.prefix, len(a.used))
}

// ErrNoAddress: every address of the network is in use.
var ErrNoAddress = errors.New("no free address")

// Release frees addr if vmID holds it.
func (a *Allocator) Release(addr netip.Addr, vmID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.used[addr] == vmID {
		delete(a.used, addr)
	}
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	for i := 3; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	return netip.AddrFrom4(b)
}

// Offset is addr's offset from prefix's network address: a VM's slot
// number on the host, unique among live VMs (addresses are) and the same
// after a restart (the address is in the VM's record).
func Offset(prefix netip.Prefix, addr netip.Addr) (int, error) {
	base := prefix.Masked()
	if !addr.Is4() || !base.Addr().Is4() || !base.Contains(addr) {
		return 0, fmt.Errorf("address %s is not in %s", addr, base)
	}
	a, b := addr.As4(), base.Addr().As4()
	return int(be32(a) - be32(b)), nil
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
