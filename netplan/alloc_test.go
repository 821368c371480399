package netplan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func TestAllocatorSkipsReservedAndExhausts(t *testing.T) {
	tests := []struct {
		prefix, gateway string
		free            int
	}{
		{"10.0.0.0/28", "10.0.0.1", 13},
		{"10.0.0.0/30", "10.0.0.1", 1},
		{"192.168.8.0/24", "192.168.8.254", 253},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			p, gw := netip.MustParsePrefix(tc.prefix), netip.MustParseAddr(tc.gateway)
			a := NewAllocator(p, gw)
			seen := map[netip.Addr]bool{}
			for i := 0; i < tc.free; i++ {
				ip, err := a.Allocate("vm")
				if err != nil {
					t.Fatalf("allocation %d: %v", i, err)
				}
				if seen[ip] || ip == gw || ip == p.Masked().Addr() || ip == lastAddr(p) || !p.Contains(ip) {
					t.Fatalf("allocation %d gave %s", i, ip)
				}
				seen[ip] = true
			}
			if _, err := a.Allocate("vm"); err == nil || !strings.Contains(err.Error(), "no free address") {
				t.Fatalf("exhausted allocator: err = %v", err)
			}
		})
	}
}

func TestAllocatorReserveAndRelease(t *testing.T) {
	a := NewAllocator(netip.MustParsePrefix("10.0.0.0/29"), netip.MustParseAddr("10.0.0.1"))
	if err := a.Reserve(netip.MustParseAddr("10.0.0.2"), "old"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reserve(netip.MustParseAddr("10.0.0.2"), "other"); err == nil {
		t.Fatal("reserving a held address twice succeeded")
	}
	if err := a.Reserve(netip.MustParseAddr("10.9.0.2"), "x"); err == nil {
		t.Fatal("reserving an address outside the prefix succeeded")
	}
	ip, _ := a.Allocate("new")
	if ip.String() != "10.0.0.3" {
		t.Fatalf("first free = %s, want 10.0.0.3", ip)
	}
	a.Release(netip.MustParseAddr("10.0.0.2"), "someone-else")
	if ip, _ := a.Allocate("n2"); ip.String() != "10.0.0.4" {
		t.Fatalf("release by a non-owner freed the address: got %s", ip)
	}
	a.Release(netip.MustParseAddr("10.0.0.2"), "old")
	if ip, _ := a.Allocate("n3"); ip.String() != "10.0.0.2" {
		t.Fatalf("released address not reused: got %s", ip)
	}
}

func TestTAPName(t *testing.T) {
	if n, err := TAPName("0123456789ab"); err != nil || n != "fa0123456789ab" {
		t.Fatalf("TAPName = %q, %v", n, err)
	}
	if _, err := TAPName("0123456789abcd"); err == nil {
		t.Fatal("a 16-byte tap name was accepted")
	}
}

func TestRulesScriptReplacesAtomically(t *testing.T) {
	r := Rules{Bridge: "fa-br0", Prefix: netip.MustParsePrefix("10.200.0.0/24"), NAT: true}
	s := r.Script()
	for _, want := range []string{
		"table ip fireactions_fa_br0 {}\ndelete table ip fireactions_fa_br0\n",
		`ip saddr 10.200.0.0/24 oifname != "fa-br0" masquerade`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	r.NAT = false
	if strings.Contains(r.Script(), "masquerade") {
		t.Error("NAT off still masquerades")
	}
}

func TestOffset(t *testing.T) {
	for _, c := range []struct {
		prefix, addr string
		want         int
		ok           bool
	}{
		{"10.200.0.0/24", "10.200.0.0", 0, true},
		{"10.200.0.0/24", "10.200.0.2", 2, true},
		{"10.200.0.0/24", "10.200.0.255", 255, true},
		{"172.16.8.0/21", "172.16.9.3", 259, true},
		{"10.0.0.0/8", "10.255.255.254", 1<<24 - 2, true},
		{"10.200.0.0/24", "10.200.1.2", 0, false},
		{"10.200.0.0/24", "::1", 0, false},
	} {
		t.Run(c.prefix+" "+c.addr, func(t *testing.T) {
			got, err := Offset(netip.MustParsePrefix(c.prefix), netip.MustParseAddr(c.addr))
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("Offset = %d, %v; want %d, ok %v", got, err, c.want, c.ok)
			}
		})
	}
}

// Whatever the order of allocations, releases and reservations, the
// allocator hands out the lowest free address, as a scan would.
func TestAllocatorHandsOutTheLowestFreeAddress(t *testing.T) {
	prefix, gw := netip.MustParsePrefix("10.0.0.0/24"), netip.MustParseAddr("10.0.0.1")
	a := NewAllocator(prefix, gw)
	held := map[netip.Addr]string{}
	lowest := func() netip.Addr {
		for ip := prefix.Addr().Next(); ip.Less(lastAddr(prefix)); ip = ip.Next() {
			if _, ok := held[ip]; !ok && ip != gw {
				return ip
			}
		}
		return netip.Addr{}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		id := fmt.Sprintf("vm%d", i)
		switch op := rng.IntN(10); {
		case op < 5:
			want := lowest()
			got, err := a.Allocate(id)
			if !want.IsValid() {
				if !errors.Is(err, ErrNoAddress) {
					t.Fatalf("step %d: full network: %v %v", i, got, err)
				}
				continue
			}
			if err != nil || got != want {
				t.Fatalf("step %d: Allocate = %v %v, want %v", i, got, err, want)
			}
			held[got] = id
		case op < 9:
			for ip, owner := range held { // any one
				a.Release(ip, owner)
				delete(held, ip)
				break
			}
		default:
			ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(2 + rng.IntN(253))})
			if _, ok := held[ip]; ok {
				continue
			}
			if err := a.Reserve(ip, id); err != nil {
				t.Fatalf("step %d: Reserve %s: %v", i, ip, err)
			}
			held[ip] = id
		}
	}
}

// BenchmarkAllocate is one VM's address allocated and released with
// 1,000 addresses in use: O(log N), not a scan past the ones in use.
// Run: go test -run '^$' -bench Allocate ./netplan
func BenchmarkAllocate(b *testing.B) {
	a := NewAllocator(netip.MustParsePrefix("10.0.0.0/16"), netip.MustParseAddr("10.0.0.1"))
	for i := 0; i < 1000; i++ {
		if _, err := a.Allocate(fmt.Sprintf("vm%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ip, err := a.Allocate("x")
		if err != nil {
			b.Fatal(err)
		}
		a.Release(ip, "x")
	}
}
