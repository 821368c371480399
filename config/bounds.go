package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// Limits that keep a configuration within what can work and is safe
// (issue 14, items 15 and 21). Each is a fixed rule, not a setting: a
// value past it is a mistake, never a tuning choice.
const (
	// MaxPoolVMs is the most VMs one pool may have (max), in the file and
	// through the API's scale. Each VM is a VMM process, a TAP and at least
	// 128 MiB of guest memory: 4096 of them is past what one host runs,
	// and within any network.cidr of /20 or larger.
	MaxPoolVMs = 4096
	// maxMemoryMiB is 1 TiB per VM: larger than any CI job needs or any
	// host gives one guest, and far from overflowing memory_mib << 20 (the
	// bytes QEMU, Firecracker and the cgroup's memory.max are given).
	maxMemoryMiB = 1 << 20
	// maxDiskMiB is 16 TiB of writable disk per VM (sparse): beyond it a
	// size in bytes nears what file systems allow for one file.
	maxDiskMiB = 1 << 24
	// minBootTimeout: no guest boots and registers its runner faster; a
	// smaller value kills every VM before it is ready.
	minBootTimeout = 10 * time.Second
	// minJobTimeout: the job timeout runs from "runner ready"; below a
	// minute no job could finish.
	minJobTimeout = time.Minute
	// minCIDRBits is the largest network.cidr, a /16 (65,533 guests): a
	// larger prefix cannot be used by one host and would route a large
	// part of the address space to the bridge.
	minCIDRBits = 16
)

// inRange checks lo <= n <= hi; why says what hi is (may be empty).
func inRange(n, lo, hi int, why string) error {
	switch {
	case n < lo:
		return errorf("%d is less than %d", n, lo)
	case n > hi && why != "":
		return errorf("%d is more than %d (%s)", n, hi, why)
	case n > hi:
		return errorf("%d is more than %d", n, hi)
	}
	return nil
}

// specialRanges are IPv4 ranges guests cannot be given: the host's own
// or not unicast.
var specialRanges = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network"`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (and cloud metadata)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (and broadcast)"},
}

// cidrUsable checks a parsed network.cidr against the special ranges and
// the largest size.
func cidrUsable(p netip.Prefix) error {
	for _, r := range specialRanges {
		if r.p.Overlaps(p) {
			return errorf("%s overlaps %s, %s space: use a private range such as 10.200.0.0/24", p, r.p, r.what)
		}
	}
	if p.Bits() < minCIDRBits {
		return errorf("prefix length /%d is larger than /%d (65,533 guests), the most one host can use", p.Bits(), minCIDRBits)
	}
	return nil
}

// guestAddresses is how many guest addresses a valid network.cidr has:
// all of its 2^(32-bits) addresses but the network address, the broadcast
// address and the gateway (always a host address of cidr), as
// netplan.Allocator hands them out.
func guestAddresses(p netip.Prefix) int { return 1<<(32-p.Bits()) - 3 }

// poolsFit checks that the pools' max together fit in network.cidr's
// guest addresses. Pools whose max is itself wrong are left out: their
// own error says enough, and the sum would mislead.
func poolsFit(cidr string, pools []Pool) error {
	p, err := parseCIDR(cidr)
	if err != nil || cidrUsable(p) != nil {
		return nil // network.cidr's own error
	}
	total, parts := 0, []string{}
	for i, pl := range pools {
		if poolMax(pl.Max, pl.MinIdle) != nil {
			return nil
		}
		name := pl.Name
		if name == "" {
			name = fmt.Sprintf("pools[%d]", i)
		}
		total += pl.Max
		part := fmt.Sprintf("%s %d", name, pl.Max)
		if pl.WarmStart {
			// Its template's build holds an address (its slot, the
			// jailer's uid) while it builds, beside a full pool.
			total++
			part += " + 1 for its template"
		}
		parts = append(parts, part)
	}
	n := guestAddresses(p)
	if total <= n {
		return nil
	}
	plural := "es"
	if n == 1 {
		plural = ""
	}
	return errorf("%s has %d guest address%s (%d less the network, gateway and broadcast addresses), fewer than the pools' max together: %d (%s)",
		p, n, plural, 1<<(32-p.Bits()), total, strings.Join(parts, ", "))
}

// reservedBridges are interface names network.bridge must not take: the
// loopback interface, and the names of /proc/sys/net/*/conf's defaults.
var reservedBridges = map[string]string{
	"lo":      `"lo" is the loopback interface`,
	"all":     `"all" is reserved (/proc/sys/net/ipv4/conf/all)`,
	"default": `"default" is reserved (/proc/sys/net/ipv4/conf/default)`,
	".":       `"." is not an interface name`,
	"..":      `".." is not an interface name`,
}

// binaryPath accepts an absolute path or a bare name looked up in PATH,
// not a relative path resolved against the working directory.
func binaryPath(s string) error {
	if s == "" {
		return errMissing
	}
	if strings.HasPrefix(s, "/") || !strings.Contains(s, "/") {
		return nil
	}
	return errorf("%q is neither an absolute path nor a name looked up in PATH", s)
}

// label checks one label of a pool whose forge has type typ ("" when
// unknown).
func label(l, typ string) error {
	switch {
	case l == "":
		return errors.New("is empty")
	case strings.ContainsFunc(l, unicode.IsControl):
		return errorf("%q contains a control character", l)
	case strings.ContainsFunc(l, func(r rune) bool { return unicode.IsSpace(r) || r == ',' }):
		return errorf("%q contains a space or a comma", l)
	case typ == "gitea" && strings.Contains(l, ":"):
		return errorf("%q contains ':': act_runner reads a label as NAME:SCHEMA, so the forge would see %q", l, l[:strings.Index(l, ":")])
	}
	return nil
}

// loopbackListen reports whether a listen address's host is loopback:
// an address in 127.0.0.0/8 or ::1, or localhost. An empty host is every
// address; host names other than localhost may resolve anywhere.
func loopbackListen(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return true // hostPort reports it
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// plaintextListen refuses api.listen on a non-loopback address without
// TLS, unless allow_plaintext says so.
func plaintextListen(a *API) error {
	if a.Listen == "" || a.TLSCertFile != "" || a.AllowPlaintext || loopbackListen(a.Listen) {
		return nil
	}
	return errorf("%s is not a loopback address and TLS is off: bearer tokens would cross the network in clear; set tls_cert_file and tls_key_file, or allow_plaintext: true", a.Listen)
}
