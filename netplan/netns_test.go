package netplan

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNewNetns runs f on a thread in a fresh network namespace, so the
// test's bridges, TAPs and nftables tables touch nothing of the host's.
func inNewNetns(t testing.TB, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netplan's namespace tests need root (make test runs them as root)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft not installed (make deps installs nftables)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the namespace
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		f()
		_ = netns.Set(orig)
	}()
	<-done
}

func testRules() (Bridge, Rules) {
	b := Bridge{Name: "fatest0", Prefix: netip.MustParsePrefix("10.77.0.0/20"), Gateway: netip.MustParseAddr("10.77.0.1"), MTU: 1500}
	r := Rules{Bridge: b.Name, Prefix: b.Prefix, Gateway: b.Gateway, NAT: true, HostTCP: []int{8089, 3000}, HostUDP: []int{53},
		BlockPrivate: true, NewConnPerSecond: 20, KBytesPerSecond: 10000}
	return b, r
}

func nftList(t testing.TB, table string) string {
	out, err := exec.Command("nft", "list", "table", "bridge", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	return string(out)
}

// TestRulesApplyAndVMElements applies the full policy in a namespace, then
// admits and expels a VM through netlink and checks the sets.
func TestRulesApplyAndVMElements(t *testing.T) {
	inNewNetns(t, func() {
		b, r := testRules()
		if err := b.Ensure(); err != nil {
			t.Error(err)
			return
		}
		ctx := context.Background()
		if err := r.Apply(ctx); err != nil {
			t.Errorf("apply: %v", err)
			return
		}
		// Applying again replaces, it does not duplicate.
		if err := r.Apply(ctx); err != nil {
			t.Errorf("re-apply: %v", err)
			return
		}
		vm := VM{TAP: "fa0123456789ab", MAC: "02:11:22:33:44:55", IP: netip.MustParseAddr("10.77.3.4")}
		if err := b.AddTAP(vm.TAP); err != nil {
			t.Error(err)
			return
		}
		if err := r.AddVM(vm); err != nil {
			t.Errorf("add vm: %v", err)
			return
		}
		// Another orchestrator's TAP on another bridge is not ours.
		other := Bridge{Name: "faother0", Prefix: netip.MustParsePrefix("10.78.0.0/24"), Gateway: netip.MustParseAddr("10.78.0.1")}
		if err := other.Ensure(); err != nil {
			t.Error(err)
			return
		}
		if err := other.AddTAP("faotherstap"); err != nil {
			t.Error(err)
			return
		}
		if taps, err := b.TAPs(); err != nil || len(taps) != 1 || taps[0] != vm.TAP {
			t.Errorf("bridge TAPs = %v, %v; want only %s", taps, err, vm.TAP)
		}
		list := nftList(t, r.Table())
		for _, want := range []string{`"fa0123456789ab" . 02:11:22:33:44:55 . 10.77.3.4`, `elements = { "fa0123456789ab" }`} {
			if !strings.Contains(list, want) {
				t.Errorf("table lacks %q:\n%s", want, list)
			}
		}
		if err := r.RemoveVM(vm); err != nil {
			t.Errorf("remove vm: %v", err)
		}
		if list := nftList(t, r.Table()); strings.Contains(list, "fa0123456789ab") {
			t.Errorf("vm still in the table after RemoveVM:\n%s", list)
		}
		if err := Retire(vm.TAP); err != nil {
			t.Error(err)
		}
		if err := Retire("fa-never-was"); err != nil {
			t.Errorf("retiring a missing tap: %v", err)
		}
		if err := ReapDead(); err != nil {
			t.Error(err)
		}
		if taps, _ := b.TAPs(); len(taps) != 0 {
			t.Errorf("taps left after reaping: %v", taps)
		}
		if err := ReapDead(); err != nil {
			t.Errorf("reaping nothing: %v", err)
		}
		if err := r.Remove(ctx); err != nil {
			t.Errorf("remove: %v", err)
		}
		out, _ := exec.Command("nft", "list", "tables").CombinedOutput()
		if strings.Contains(string(out), r.Table()) {
			t.Errorf("tables left: %s", out)
		}
	})
}

// BenchmarkVMNetwork is one VM's host network set-up and tear-down: the
// address, the TAP on the bridge, the rule elements, and back; the TAP is
// retired (down, off the bridge), the kernel's deletion batched after.
// Run: go test -run '^$' -bench VMNetwork ./netplan (as root).
func BenchmarkVMNetwork(b *testing.B) {
	for _, present := range []int{0, 200} {
		b.Run(map[int]string{0: "alone", 200: "with-200-vms"}[present], func(b *testing.B) {
			inNewNetns(b, func() {
				br, r := testRules()
				if err := br.Ensure(); err != nil {
					b.Error(err)
					return
				}
				if err := r.Apply(context.Background()); err != nil {
					b.Error(err)
					return
				}
				alloc := NewAllocator(br.Prefix, br.Gateway)
				for i := 0; i < present; i++ {
					ip, _ := alloc.Allocate("other")
					// AddVM pins the VM's MAC to its TAP: the TAP must exist.
					if err := br.AddTAP("faother" + strconv.Itoa(i)); err != nil {
						b.Error(err)
						return
					}
					if err := r.AddVM(VM{TAP: "faother" + strconv.Itoa(i), MAC: NewMAC(), IP: ip}); err != nil {
						b.Error(err)
						return
					}
				}
				times := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					start := time.Now()
					ip, err := alloc.Allocate("vm")
					if err != nil {
						b.Error(err)
						return
					}
					vm := VM{TAP: "fab" + strconv.Itoa(i), MAC: NewMAC(), IP: ip}
					if err := br.AddTAP(vm.TAP); err != nil {
						b.Error(err)
						return
					}
					if err := r.AddVM(vm); err != nil {
						b.Error(err)
						return
					}
					if err := r.RemoveVM(vm); err != nil {
						b.Error(err)
						return
					}
					if err := Retire(vm.TAP); err != nil {
						b.Error(err)
						return
					}
					alloc.Release(ip, "vm")
					times = append(times, time.Since(start))
				}
				b.StopTimer()
				slices.Sort(times)
				b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
				b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "p99-ms")
				if err := ReapDead(); err != nil {
					b.Error(err)
				}
			})
		})
	}
}

// TestBridgeMACStaysPutAsTAPsComeAndGo: the gateway's MAC is the bridge's
// own, pinned, whatever MACs the TAPs joining and leaving it have, and the
// same after Ensure runs again (a restart adopting VMs).
func TestBridgeMACStaysPutAsTAPsComeAndGo(t *testing.T) {
	inNewNetns(t, func() {
		b, _ := testRules()
		macOf := func() string {
			l, err := netlink.LinkByName(b.Name)
			if err != nil {
				t.Error(err)
				return ""
			}
			return l.Attrs().HardwareAddr.String()
		}
		if err := b.Ensure(); err != nil {
			t.Error(err)
			return
		}
		want := BridgeMAC(b.Name).String()
		if got := macOf(); got != want {
			t.Errorf("after Ensure: bridge mac %s, want %s", got, want)
		}
		// TAP MACs below and above the bridge's: a bridge that follows its
		// ports would take the lowest.
		for i, mac := range []string{"02:00:00:00:00:01", "fe:ff:ff:ff:ff:fe"} {
			name := fmt.Sprintf("famactest%d", i)
			if err := b.AddTAP(name); err != nil {
				t.Error(err)
				return
			}
			l, _ := netlink.LinkByName(name)
			hw, _ := net.ParseMAC(mac)
			if err := netlink.LinkSetHardwareAddr(l, hw); err != nil {
				t.Error(err)
				return
			}
			if got := macOf(); got != want {
				t.Errorf("after adding a tap with mac %s: bridge mac %s, want %s", mac, got, want)
			}
		}
		if err := DeleteTAP("famactest0"); err != nil {
			t.Error(err)
		}
		if err := b.Ensure(); err != nil {
			t.Error(err)
		}
		if got := macOf(); got != want {
			t.Errorf("after removing a tap and Ensure again: bridge mac %s, want %s", got, want)
		}
		// A bridge left with another address (an older version, or made by
		// hand) is pinned on the next start.
		l, _ := netlink.LinkByName(b.Name)
		other, _ := net.ParseMAC("02:12:34:56:78:9a")
		if err := netlink.LinkSetHardwareAddr(l, other); err != nil {
			t.Error(err)
			return
		}
		if err := b.Ensure(); err != nil {
			t.Error(err)
		}
		if got := macOf(); got != want {
			t.Errorf("Ensure on a bridge with mac %s left %s, want %s", other, got, want)
		}
	})
}

func TestBridgeMACIsLocalUnicastAndPerName(t *testing.T) {
	a, b := BridgeMAC("fabr0"), BridgeMAC("fabr1")
	if a.String() == b.String() {
		t.Errorf("two bridges share mac %s", a)
	}
	for _, m := range []net.HardwareAddr{a, b} {
		if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
			t.Errorf("mac %s is not locally administered unicast", m)
		}
	}
	if BridgeMAC("fabr0").String() != a.String() {
		t.Error("BridgeMAC is not stable")
	}
}
