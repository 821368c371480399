package netplan

import (
	"container/heap"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Allocator hands out VM addresses from a prefix, never one in use. The
// orchestrator seeds it from the VMs it finds on disk at start, so the
// addresses of live VMs are never handed out twice.
//
// Allocate and Release are O(log N) in the addresses in use (amortized):
// every address below next was handed out or reserved once and is either
// in use or in free, a heap of the released ones; Allocate takes the
// lowest of free, else next.
type Allocator struct {
	prefix  netip.Prefix
	gateway netip.Addr
	mu      sync.Mutex
	used    map[netip.Addr]string // address -> VM id
	next    netip.Addr            // the lowest address never looked at
	free    addrHeap              // released addresses below next (some reserved again since: skipped)
	inFree  map[netip.Addr]bool   // what free holds
}

// NewAllocator allocates from prefix, skipping its network and broadcast
// addresses and the gateway.
func NewAllocator(prefix netip.Prefix, gateway netip.Addr) *Allocator {
	prefix = prefix.Masked()
	return &Allocator{prefix: prefix, gateway: gateway, used: map[netip.Addr]string{},
		next: prefix.Addr().Next(), inFree: map[netip.Addr]bool{}}
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
	for a.free.Len() > 0 {
		ip := heap.Pop(&a.free).(netip.Addr)
		delete(a.inFree, ip)
		if _, ok := a.used[ip]; !ok {
			a.used[ip] = vmID
			return ip, nil
		}
	}
	last := lastAddr(a.prefix)
	for ; a.next.IsValid() && a.next.Less(last); a.next = a.next.Next() {
		ip := a.next
		if ip == a.gateway {
			continue
		}
		if _, ok := a.used[ip]; !ok {
			a.used[ip] = vmID
			a.next = ip.Next()
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
	if owner, ok := a.used[addr]; ok && owner == vmID {
		delete(a.used, addr)
		if addr.Less(a.next) && !a.inFree[addr] {
			a.inFree[addr] = true
			heap.Push(&a.free, addr)
		}
	}
}

// addrHeap is a min-heap of addresses (container/heap).
type addrHeap []netip.Addr

func (h addrHeap) Len() int           { return len(h) }
func (h addrHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h addrHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *addrHeap) Push(x any)        { *h = append(*h, x.(netip.Addr)) }
func (h *addrHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
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
