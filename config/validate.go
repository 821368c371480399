package config

import (
	"errors"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/nixos-fireactions/nixos-fireactions/catalog"
)

var (
	hostIDPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)
	poolNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)
	bridgePattern   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	userPattern     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// forgeType checks a forge type: the drivers a configuration may name.
func forgeType(t string) error { return oneOf(t, catalog.Forges()...) }

// validator checks a decoded, completed configuration, collecting every
// problem. It also reads the forges' tokens, which can fail like any
// other field.
type validator struct {
	file string
	pos  positions
	env  func(string) (string, bool)
	errs []error
	// offline: check without this host's files and environment.
	offline bool
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
		rule{root.child("agent_path"), optional(c.AgentPath, v.absoluteFile)},
		rule{root.child("drain_grace"), positive(c.DrainGrace)},
		rule{root.child("reconcile_interval"), durationAtLeast(c.ReconcileInterval, 200*time.Millisecond)},
		rule{log.child("level"), oneOf(c.Log.Level, "debug", "info", "warn", "error")},
		rule{log.child("format"), oneOf(c.Log.Format, "text", "json")},
		rule{root.child("metrics").child("listen"), errors.Join(optional(c.Metrics.Listen, hostPort), notSame(c.Metrics.Listen, c.API.Listen, "api.listen"))},
		rule{root.child("console_logs").child("keep"), notNegativeDuration(c.ConsoleLogs.Keep)},
		rule{root.child("console_logs").child("max_kib"), between(c.ConsoleLogs.MaxKiB, 4, 1<<20)},
		rule{root.child("console_logs").child("keep_max_mib"), between(c.ConsoleLogs.KeepMaxMiB, 1, 1<<20)},
		rule{root.child("vmm").child("driver"), oneOf(c.VMM.Driver, catalog.VMMs()...)},
		rule{qemu.child("binary"), binaryPath(c.VMM.QEMU.Binary)},
		rule{qemu.child("accel"), oneOf(c.VMM.QEMU.Accel, "auto", "kvm", "tcg")},
	)
	v.firecracker(root.child("vmm").child("firecracker"), &c.VMM.Firecracker, c.VMM.Driver, c.StateDir, c.Network.CIDR)
	v.api(root.child("api"), &c.API)
	v.network(root.child("network"), &c.Network)
	types := v.forges(root.child("forges"), c.Forges)
	v.images(root.child("images"), &c.Images)
	v.limits(root.child("limits"), &c.Limits)
	v.registryCache(root.child("registry_cache"), &c.RegistryCache)
	v.fleet(root.child("fleet"), c.Fleet)
	v.pools(root.child("pools"), c.Pools, types)
	v.warmStarts(root.child("pools"), c.Pools, c.VMM.Driver)
	v.githubPools(root.child("pools"), c.Pools, c.Forges)
	v.check(rule{root.child("network").child("cidr"), poolsFit(c.Network.CIDR, c.Pools)})
}

// api checks the API section and reads its bearer tokens.
func (v *validator) api(f field, a *API) {
	v.check(
		rule{f.child("socket"), socketPath(a.Socket)},
		rule{f.child("listen"), errors.Join(optional(a.Listen, hostPort), plaintextListen(a))},
		rule{f.child("allow_plaintext"), onlyWith(a.AllowPlaintext && a.Listen == "", "listen")},
		rule{f.child("tls_cert_file"), v.pairedFile(a.TLSCertFile, a.TLSKeyFile, "tls_key_file", v.existingFile)},
		rule{f.child("tls_key_file"), v.pairedFile(a.TLSKeyFile, a.TLSCertFile, "tls_cert_file", v.secretFile)},
	)
	var err error
	switch {
	case a.TokensFile != "":
		a.Tokens, err = v.readTokensFile(a.TokensFile)
	case a.Listen != "":
		err = errors.New("must be set when listen is: TCP clients need bearer tokens")
	}
	v.check(rule{f.child("tokens_file"), err})
}

func (v *validator) network(f field, n *Network) {
	prefix, cidrErr := parseCIDR(n.CIDR)
	if cidrErr == nil {
		cidrErr = cidrUsable(prefix)
	}
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
	v.networkPolicy(f, n)
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
			rule{ff.child("ca_file"), optional(fo.CAFile, v.existingFile)},
		)
		switch {
		case fo.Type == "github":
			v.githubAuth(ff, fo)
		case forgeType(fo.Type) == nil:
			const what = "forges (GitHub App authentication)"
			v.check(
				rule{ff.child("app_id"), onlyFor(fo.AppID != 0, "github", fo.Type, what)},
				rule{ff.child("app_private_key_file"), onlyFor(fo.AppPrivateKeyFile != "", "github", fo.Type, what)},
				rule{ff.child("installation_id"), onlyFor(fo.InstallationID != 0, "github", fo.Type, what)},
			)
			v.token(ff, fo)
		default: // the type is the problem; the token is read all the same
			v.token(ff, fo)
		}
		v.pollInterval(ff, fo)
		v.cancelRuns(ff, fo)
		v.flavor(ff, fo)
		if fo.WebhookSecretFile != "" {
			var err error
			fo.WebhookSecret, err = v.readTokenFile(fo.WebhookSecretFile)
			v.check(rule{ff.child("webhook_secret_file"), err})
		}
		if _, ok := types[fo.Name]; !ok && fo.Name != "" {
			types[fo.Name] = fo.Type
		}
	}
	return types
}

// token reads a forge's API token from token_file or token_env.
func (v *validator) token(ff field, fo *Forge) {
	token, key, err := readToken(fo, v.readTokenFile, v.readTokenEnv)
	fo.Token = token
	if key != "" {
		v.check(rule{ff.child(key), err})
	} else {
		v.check(rule{ff, err})
	}
}

// githubAuth checks a github forge's credentials, a GitHub App or a
// personal access token, and reads them.
func (v *validator) githubAuth(ff field, fo *Forge) {
	app := fo.AppID != 0 || fo.AppPrivateKeyFile != ""
	hasToken := fo.TokenFile != "" || fo.TokenEnv != ""
	switch {
	case app && hasToken:
		v.check(rule{ff, errors.New("set either app_id and app_private_key_file (a GitHub App) or one of token_file and token_env (a personal access token), not both")})
	case !app && !hasToken:
		v.check(rule{ff, errors.New("set app_id and app_private_key_file (a GitHub App) or one of token_file and token_env (a personal access token)")})
	case !app:
		v.check(rule{ff.child("installation_id"), onlyWith(fo.InstallationID != 0, "app_id (a GitHub App)")})
		v.token(ff, fo)
	}
	if !app {
		return
	}
	var keyErr error
	if fo.AppPrivateKeyFile == "" {
		keyErr = errors.New("must be set with app_id")
	} else {
		fo.AppPrivateKey, keyErr = v.readPrivateKeyFile(fo.AppPrivateKeyFile)
	}
	v.check(
		rule{ff.child("app_id"), githubID(fo.AppID, "must be set with app_private_key_file")},
		rule{ff.child("app_private_key_file"), keyErr},
		rule{ff.child("installation_id"), githubID(fo.InstallationID, "")},
	)
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
			rule{pf.child("scope"), poolScope(p.Scope, typ, known)},
			rule{pf.child("min_idle"), notNegative(p.MinIdle)},
			rule{pf.child("max"), poolMax(p.Max, p.MinIdle)},
		)
		v.labels(pf.child("labels"), p.Labels, typ)
		v.repos(pf.child("repos"), p.Repos, p.Scope, typ, known)
		v.vm(pf.child("vm"), &p.VM)
		v.runner(pf.child("runner"), &p.Runner, typ, known)
		v.runnerGroupScope(pf.child("runner").child("group"), p, typ)
		v.demand(pf.child("demand"), p, typ)
		v.timeouts(pf.child("timeouts"), &p.Timeouts)
	}
}

// warmStarts checks the pools that warm_start: their VMM driver saves and
// restores guests. Image pools may: their template boots with the image's
// drive and a writable disk it never mounts (see pool's buildTemplate).
func (v *validator) warmStarts(f field, pools []Pool, driver string) {
	for i := range pools {
		p := &pools[i]
		if !p.WarmStart {
			continue
		}
		var err error
		switch {
		case oneOf(driver, catalog.VMMs()...) != nil:
			// vmm.driver is the problem, reported there
		case !slices.Contains(catalog.WarmVMMs(), driver):
			err = errorf("vmm.driver %q cannot save and restore VMs; warm starts need one of %s", driver, strings.Join(catalog.WarmVMMs(), ", "))
		case p.VM.Image != "" && driver == catalog.Firecracker:
			// A Firecracker restore of a template with drives is not built:
			// its snapshot names the template's drive paths.
			err = errorf("not with vm.image under vmm.driver %q: image pools warm-start with %s", driver, catalog.QEMU)
		}
		v.check(rule{f.index(i).named(p.Name).child("warm_start"), err})
	}
}

func (v *validator) labels(f field, labels []string, typ string) {
	if len(labels) == 0 {
		v.check(rule{f, errors.New("at least one label is required")})
		return
	}
	first := map[string]int{}
	for i, l := range labels {
		prev, seen := first[l]
		err := label(l, typ)
		switch {
		case err != nil:
		case seen:
			err = errorf("duplicate label %q (also %s)", l, f.index(prev).label)
		default:
			first[l] = i
		}
		v.check(rule{f.index(i), err})
	}
}

// repos checks a pool's repos: OWNER/NAME names, only for GitHub pools
// that have no single repository of their own.
func (v *validator) repos(f field, repos []string, scope, typ string, forgeKnown bool) {
	if len(repos) == 0 {
		return
	}
	if !forgeKnown || forgeType(typ) != nil {
		return // the forge reference or its type is the problem
	}
	if typ != "github" {
		v.check(rule{f, onlyFor(true, "github", typ, "pools")})
		return
	}
	if sc, err := ParseScope(scope); err == nil && sc.Kind == ScopeRepo {
		v.check(rule{f, errorf("only with an org or enterprise scope (scope %s polls its own repository)", sc)})
		return
	}
	first := map[string]int{}
	for i, r := range repos {
		err := repoName(r)
		if prev, seen := first[r]; seen && err == nil {
			err = errorf("duplicate repository %q (also %s)", r, f.index(prev).label)
		} else if err == nil {
			first[r] = i
		}
		v.check(rule{f.index(i), err})
	}
}

func (v *validator) vm(f field, vm *VMShape) {
	v.check(
		rule{f.child("vcpus"), between(vm.VCPUs, 1, 32)},
		rule{f.child("memory_mib"), inRange(vm.MemoryMiB, 128, maxMemoryMiB, "1 TiB")},
		rule{f.child("kernel"), v.existingFile(vm.Kernel)},
	)
	v.vmRoot(f, vm)
	if len(vm.KernelModules) == 0 {
		return
	}
	for i, m := range vm.KernelModules {
		v.check(rule{f.child("kernel_modules").index(i), moduleName(m)})
	}
	var err error
	switch {
	case vm.ModulesDir != "":
		err = v.existingDir(vm.ModulesDir)
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
		rule{f.child("gid"), runnerGID(r.GID)},
		rule{f.child("fetch_interval"), durationAtLeast(r.FetchInterval, 100*time.Millisecond)},
	)
	if !forgeKnown || forgeType(typ) != nil {
		return // the forge reference or its type is the problem
	}
	// Options of one forge type: checked on its pools, refused elsewhere.
	for _, o := range []struct {
		key, owner string
		set        bool
		check      func() error
	}{
		{"group", "github", r.Group != "", func() error { return runnerGroup(r.Group) }},
		{"run_untagged", "gitlab", r.RunUntagged, nil},
		{"locked", "gitlab", r.Locked != nil, nil},
		{"access_level", "gitlab", r.AccessLevel != "", func() error { return oneOf(r.AccessLevel, "not_protected", "ref_protected") }},
		{"maximum_timeout", "gitlab", r.MaximumTimeout != 0, func() error { return maximumTimeout(r.MaximumTimeout) }},
		{"executor", "gitlab", r.Executor != "", func() error { return oneOf(r.Executor, "auto", "shell", "docker") }},
		{"default_image", "gitlab", r.DefaultImage != "", func() error { return imageName(r.DefaultImage) }},
	} {
		err := onlyFor(o.set, o.owner, typ, "pools")
		if err == nil && typ == o.owner && o.check != nil {
			err = o.check()
		}
		v.check(rule{f.child(o.key), err})
	}
}

func (v *validator) timeouts(f field, t *Timeouts) {
	v.check(
		rule{f.child("boot"), durationAtLeast(t.Boot, minBootTimeout)},
		rule{f.child("idle"), notNegativeDuration(t.Idle)},
		rule{f.child("job"), durationAtLeast(t.Job, minJobTimeout)},
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
	case reservedBridges[s] != "":
		return errors.New(reservedBridges[s])
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

// poolScope checks a pool's scope, against its forge's type when the
// forge is known.
func poolScope(s, typ string, forgeKnown bool) error {
	if !forgeKnown {
		typ = "" // any kind: the forge reference is the problem
	}
	_, err := CheckScope(s, typ)
	return err
}

// repoName accepts a GitHub repository's OWNER/NAME.
func repoName(s string) error {
	owner, name, ok := strings.Cut(s, "/")
	if s == "" {
		return errors.New("is empty")
	}
	if !ok || !scopeName.MatchString(owner) || !scopeName.MatchString(name) {
		return errorf("%q is not a repository (OWNER/NAME)", s)
	}
	return nil
}

// onlyFor refuses an option set on a forge or pool of another type than
// the one it belongs to: what says which ("forges", "pools", ...).
func onlyFor(set bool, owner, typ, what string) error {
	if set && typ != owner {
		return errorf("is only for %s %s, not %s", owner, what, typ)
	}
	return nil
}

// onlyWith refuses an option set without the one it depends on.
func onlyWith(set bool, other string) error {
	if set {
		return errorf("only with %s", other)
	}
	return nil
}

// githubID checks a GitHub App or installation ID; 0 is unset, an error
// when missing says so.
func githubID(id int64, missing string) error {
	switch {
	case id == 0 && missing != "":
		return errors.New(missing)
	case id < 0:
		return errorf("%d is negative", id)
	}
	return nil
}

// runnerGroup checks a GitHub runner group name.
func runnerGroup(g string) error {
	if strings.TrimSpace(g) != g || strings.ContainsFunc(g, unicode.IsControl) {
		return errorf("%q is not a runner group name (no surrounding spaces or control characters)", g)
	}
	return nil
}

// maximumTimeout checks a GitLab runner's maximum_timeout: none, or at
// least GitLab's minimum of 600 seconds.
func maximumTimeout(d time.Duration) error {
	if d == 0 {
		return nil
	}
	if d < 10*time.Minute {
		return errorf("%s is less than 10m, GitLab's minimum (0: none)", shortDuration(d))
	}
	return nil
}

// socketPath checks the path of a Unix socket to create.
func socketPath(p string) error {
	if err := absolute(p); err != nil {
		return err
	}
	if len(p) > 107 {
		return errorf("%s is longer than 107 bytes, the limit of a Unix socket path", p)
	}
	return nil
}

// notSame refuses a listen address another listener has.
func notSame(addr, other, otherKey string) error {
	if addr != "" && addr == other {
		return errorf("%s is also %s", addr, otherKey)
	}
	return nil
}

// absoluteFile accepts the absolute path of a regular file.
func absoluteFile(p string) error {
	if err := absolute(p); err != nil {
		return err
	}
	return existingFile(p)
}

// pairedFile checks a file that is set together with another: both or
// neither.
func (v *validator) pairedFile(p, other, otherKey string, check func(string) error) error {
	switch {
	case p == "" && other != "":
		return errorf("must be set with %s", otherKey)
	case p == "":
		return nil
	}
	return check(p)
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
	if maxVMs > MaxPoolVMs {
		return errorf("%d is more than %d, the most one pool may have", maxVMs, MaxPoolVMs)
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

// runnerGID checks runner.gid, which is uid when left out or 0; it is 0
// only when uid is, and uid's check says so.
func runnerGID(gid int) error {
	if gid == 0 {
		return nil
	}
	return between(gid, 1, 65534)
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

// imageName checks a container image reference loosely: GitLab's runner
// takes it verbatim, so it must at least be one word of printable
// characters.
func imageName(s string) error {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return errors.New("not an image name: it has spaces or control characters")
		}
	}
	return nil
}
