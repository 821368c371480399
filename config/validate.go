package config

import (
	"errors"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"
)

var (
	hostIDPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)
	poolNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)
	bridgePattern   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	userPattern     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// forgeType checks a forge type: the drivers a configuration may name.
func forgeType(t string) error { return oneOf(t, "gitea", "github", "gitlab") }

// validator checks a decoded, completed configuration, collecting every
// problem. It also reads the forges' tokens, which can fail like any
// other field.
type validator struct {
	file string
	pos  positions
	env  func(string) (string, bool)
	errs []error
}

// check records the rules that failed.
func (v *validator) check(rules ...rule) {
	for _, r := range rules {
		if r.err != nil {
			v.errs = append(v.errs, &FieldError{File: v.file, Line: v.pos.line(r.f.key), Field: r.f.label, Err: r.err})
		}
	}
}

func (v *validator) config(c *Config) {
	root := field{}
	log, qemu := root.child("log"), root.child("vmm").child("qemu")
	v.check(
		rule{root.child("host_id"), hostID(c.HostID)},
		rule{root.child("state_dir"), absolute(c.StateDir)},
		rule{log.child("level"), oneOf(c.Log.Level, "debug", "info", "warn", "error")},
		rule{log.child("format"), oneOf(c.Log.Format, "text", "json")},
		rule{root.child("vmm").child("driver"), oneOf(c.VMM.Driver, "qemu", "firecracker")},
		rule{qemu.child("binary"), required(c.VMM.QEMU.Binary)},
		rule{qemu.child("accel"), oneOf(c.VMM.QEMU.Accel, "auto", "kvm", "tcg")},
	)
	v.network(root.child("network"), &c.Network)
	types := v.forges(root.child("forges"), c.Forges)
	v.pools(root.child("pools"), c.Pools, types)
}

func (v *validator) network(f field, n *Network) {
	prefix, cidrErr := parseCIDR(n.CIDR)
	v.check(
		rule{f.child("bridge"), bridgeName(n.Bridge)},
		rule{f.child("cidr"), cidrErr},
		rule{f.child("gateway"), gateway(n.Gateway, prefix, cidrErr == nil)},
		rule{f.child("mtu"), between(n.MTU, 576, 9000)},
		rule{f.child("agent_port"), between(n.AgentPort, 1, 65535)},
	)
	for i, s := range n.DNS {
		v.check(rule{f.child("dns").index(i), ipAddr(s)})
	}
}

// forges checks the forges, reads their tokens and returns their types by
// name.
func (v *validator) forges(f field, forges []Forge) map[string]string {
	types := map[string]string{}
	dup := unique("forge")
	for i := range forges {
		fo := &forges[i]
		ff := f.index(i).named(fo.Name)
		v.check(
			rule{ff.child("name"), errors.Join(required(fo.Name), dup(fo.Name, ff))},
			rule{ff.child("type"), forgeType(fo.Type)},
			rule{ff.child("url"), httpURL(fo.URL)},
			rule{ff.child("guest_url"), guestURL(fo.GuestURL, fo.URL)},
			rule{ff.child("ca_file"), optional(fo.CAFile, existingFile)},
		)
		token, key, err := readToken(fo, v.env)
		fo.Token = token
		if key != "" {
			v.check(rule{ff.child(key), err})
		} else {
			v.check(rule{ff, err})
		}
		if _, ok := types[fo.Name]; !ok && fo.Name != "" {
			types[fo.Name] = fo.Type
		}
	}
	return types
}

func (v *validator) pools(f field, pools []Pool, types map[string]string) {
	if len(pools) == 0 {
		v.check(rule{f, errors.New("at least one pool is required")})
		return
	}
	dup := unique("pool")
	for i := range pools {
		p := &pools[i]
		pf := f.index(i).named(p.Name)
		typ, known := types[p.Forge]
		v.check(
			rule{pf.child("name"), errors.Join(matches(p.Name, poolNamePattern,
				"a pool name (1-31 characters of a-z, 0-9 and '-', starting with a letter or digit)"), dup(p.Name, pf))},
			rule{pf.child("forge"), forgeRef(p.Forge, known)},
			rule{pf.child("scope"), scope(p.Scope)},
			rule{pf.child("min_idle"), notNegative(p.MinIdle)},
			rule{pf.child("max"), poolMax(p.Max, p.MinIdle)},
		)
		v.labels(pf.child("labels"), p.Labels)
		v.vm(pf.child("vm"), &p.VM)
		v.runner(pf.child("runner"), &p.Runner, typ, known)
		v.timeouts(pf.child("timeouts"), &p.Timeouts)
	}
}

func (v *validator) labels(f field, labels []string) {
	if len(labels) == 0 {
		v.check(rule{f, errors.New("at least one label is required")})
		return
	}
	first := map[string]int{}
	for i, l := range labels {
		var err error
		prev, seen := first[l]
		switch {
		case l == "":
			err = errors.New("is empty")
		case strings.ContainsFunc(l, func(r rune) bool { return unicode.IsSpace(r) || r == ',' }):
			err = errorf("%q contains a space or a comma", l)
		case seen:
			err = errorf("duplicate label %q (also %s)", l, f.index(prev).label)
		default:
			first[l] = i
		}
		v.check(rule{f.index(i), err})
	}
}

func (v *validator) vm(f field, vm *VMShape) {
	v.check(
		rule{f.child("vcpus"), between(vm.VCPUs, 1, 32)},
		rule{f.child("memory_mib"), atLeast(vm.MemoryMiB, 128)},
		rule{f.child("kernel"), existingFile(vm.Kernel)},
		rule{f.child("root_initramfs"), existingFile(vm.RootInitramfs)},
	)
	if len(vm.KernelModules) == 0 {
		return
	}
	for i, m := range vm.KernelModules {
		v.check(rule{f.child("kernel_modules").index(i), moduleName(m)})
	}
	var err error
	switch {
	case vm.ModulesDir != "":
		err = existingDir(vm.ModulesDir)
	case vm.Kernel != "": // else the missing kernel is the problem
		err = errorf("must be set: kernel file name %q does not say the version (vmlinuz-VERSION or vmlinux-VERSION)",
			filepath.Base(vm.Kernel))
	}
	v.check(rule{f.child("modules_dir"), err})
}

func (v *validator) runner(f field, r *RunnerOptions, typ string, forgeKnown bool) {
	v.check(
		rule{f.child("path"), runnerPath(r.Path, typ, forgeKnown)},
		rule{f.child("user"), matches(r.User, userPattern, "a user name (a-z, 0-9, '_' and '-', starting with a letter or '_')")},
		rule{f.child("uid"), runnerUID(r.UID)},
		rule{f.child("fetch_interval"), durationAtLeast(r.FetchInterval, 100*time.Millisecond)},
	)
}

func (v *validator) timeouts(f field, t *Timeouts) {
	v.check(
		rule{f.child("boot"), positive(t.Boot)},
		rule{f.child("idle"), notNegativeDuration(t.Idle)},
		rule{f.child("job"), positive(t.Job)},
	)
}

// Rules specific to one field.

func hostID(s string) error {
	if s == "" {
		return errors.New("must be set (the hostname gives no usable default)")
	}
	return matches(s, hostIDPattern, "a host id (1-20 characters of a-z, 0-9 and '-', starting with a letter or digit)")
}

func bridgeName(s string) error {
	switch {
	case s == "":
		return errMissing
	case len(s) > 15:
		return errorf("%q is longer than 15 bytes", s)
	case !bridgePattern.MatchString(s):
		return errorf("%q may only hold letters, digits, '_', '.' and '-'", s)
	}
	return nil
}

// gateway checks the gateway address; it checks it against the prefix only
// when cidr is valid (else cidr's own error says enough).
func gateway(s string, p netip.Prefix, cidrOK bool) error {
	if s == "" {
		return nil // only when cidr is invalid: it is derived otherwise
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil || !a.Is4():
		return errorf("%q is not an IPv4 address", s)
	case !cidrOK:
		return nil
	case !p.Contains(a):
		return errorf("%s is not in network.cidr %s", a, p)
	case a == p.Addr():
		return errorf("%s is the network address of %s", a, p)
	case a == lastAddr(p):
		return errorf("%s is the broadcast address of %s", a, p)
	}
	return nil
}

// lastAddr is the last (broadcast) address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// guestURL checks guest_url only when it differs from url, which has its
// own check.
func guestURL(guest, url string) error {
	if guest == url {
		return nil
	}
	return httpURL(guest)
}

// optional applies check to s unless s is empty.
func optional(s string, check func(string) error) error {
	if s == "" {
		return nil
	}
	return check(s)
}

func forgeRef(name string, known bool) error {
	switch {
	case name == "":
		return errMissing
	case !known:
		return errorf("no forge named %q in forges", name)
	}
	return nil
}

func scope(s string) error {
	_, err := ParseScope(s)
	return err
}

func notNegative(n int) error {
	if n < 0 {
		return errorf("%d is negative", n)
	}
	return nil
}

func poolMax(maxVMs, minIdle int) error {
	if err := atLeast(maxVMs, 1); err != nil {
		return err
	}
	if maxVMs < minIdle {
		return errorf("%d is less than min_idle %d", maxVMs, minIdle)
	}
	return nil
}

func moduleName(m string) error {
	switch {
	case m == "":
		return errors.New("is empty")
	case strings.ContainsFunc(m, func(r rune) bool { return unicode.IsSpace(r) || r == '/' }):
		return errorf("%q is not a module name", m)
	}
	return nil
}

func runnerUID(uid int) error {
	if uid == 0 {
		return errors.New("0 is root; runners are unprivileged (1-65534)")
	}
	return between(uid, 1, 65534)
}

// runnerPath checks runner.path, which is derived from the forge's type
// when left out.
func runnerPath(p, typ string, forgeKnown bool) error {
	if p == "" {
		if !forgeKnown || forgeType(typ) != nil {
			return nil // the forge reference or its type is the problem
		}
		return errorf("must be set: forge type %q has no default", typ)
	}
	return absolute(p)
}
