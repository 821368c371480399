package agent

import (
	"context"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestPlanNetwork(t *testing.T) {
	p, err := planNetwork(agentproto.Network{Address: "10.200.0.2/24", Gateway: "10.200.0.1", MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	if p.iface != "eth0" || p.addr.String() != "10.200.0.2/24" || !p.gateway.Equal(net.IPv4(10, 200, 0, 1)) || p.mtu != 1400 {
		t.Errorf("plan %+v", p)
	}
	if p, err := planNetwork(agentproto.Network{Interface: "ens3", Address: "fd00::2/64"}); err != nil || p.gateway != nil || p.iface != "ens3" {
		t.Errorf("no gateway: %+v %v", p, err)
	}
	for _, n := range []agentproto.Network{
		{Address: "10.200.0.2"},
		{Address: "10.200.0.2/24", Gateway: "gw"},
		{Address: "10.200.0.2/24", Gateway: "fd00::1"},
		{Address: "10.200.0.2/24", MTU: -1},
	} {
		if _, err := planNetwork(n); err == nil {
			t.Errorf("%+v accepted", n)
		}
	}
}

// TestConfigureNetworkInANetns runs the real netlink code in a private
// network namespace, on a veth that appears only after a while, as a
// virtio-net device does while its driver probes.
func TestConfigureNetworkInANetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a network namespace (make test runs as root)")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("cannot create a network namespace: %v", err)
	}
	defer func() {
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ns.Close()
		orig.Close()
	}()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := h.LinkAdd(veth); err != nil {
			t.Errorf("adding veth: %v", err)
			return
		}
		if peer, err := h.LinkByName("peer0"); err == nil {
			h.LinkSetUp(peer)
		}
	}()

	n := agentproto.Network{Interface: "eth0", Address: "10.200.0.2/24", Gateway: "10.200.0.1", MTU: 1400}
	if err := configureNetwork(context.Background(), n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MTU != 1400 || link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0 MTU %d flags %v", link.Attrs().MTU, link.Attrs().Flags)
	}
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.200.0.2/24" {
		t.Errorf("addresses %v", addrs)
	}
	routes, _ := netlink.RouteList(link, netlink.FAMILY_V4)
	var def bool
	for _, r := range routes {
		def = def || (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(net.IPv4(10, 200, 0, 1))
	}
	if !def {
		t.Errorf("no default route via 10.200.0.1 in %v", routes)
	}
	lo, _ := netlink.LinkByName("lo")
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down")
	}

	// Configuring again (a retried boot step) is not an error.
	if err := configureNetwork(context.Background(), n, time.Second); err != nil {
		t.Errorf("second configuration: %v", err)
	}
	// A missing interface is reported after the wait.
	n.Interface = "eth9"
	start := time.Now()
	if err := configureNetwork(context.Background(), n, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "eth9 did not appear") {
		t.Errorf("missing interface: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waited %s", d)
	}
}
