//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/forgejodouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble/openapi"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// orchConfig is the orchestrator configuration an end-to-end test runs
// with: the part of the schema the tests set, rendered to YAML once by
// write. A test starts from its rig's base (giteaRig, gitlabRig or
// githubRig config and pool) and changes only what it needs; fields left
// empty are left out of the file, so the orchestrator's defaults apply.
type orchConfig struct {
	HostID            string               `yaml:"host_id"`
	StateDir          string               `yaml:"state_dir"`
	Log               logConfig            `yaml:"log,omitempty"`
	AgentPath         string               `yaml:"agent_path,omitempty"`
	VMM               *vmmConfig           `yaml:"vmm,omitempty"`
	DrainGrace        string               `yaml:"drain_grace,omitempty"`
	ReconcileInterval string               `yaml:"reconcile_interval,omitempty"`
	API               apiConfig            `yaml:"api,omitempty"`
	Metrics           *metricsConfig       `yaml:"metrics,omitempty"` // nil: the default endpoint
	Network           networkConfig        `yaml:"network"`
	Images            *imagesConfig        `yaml:"images,omitempty"`
	RegistryCache     *registryCacheConfig `yaml:"registry_cache,omitempty"`
	Forges            []forgeConfig        `yaml:"forges"`
	Pools             []poolConfig         `yaml:"pools"`
	Fleet             *fleetConfig         `yaml:"fleet,omitempty"`
}

type fleetConfig struct {
	URLs          []string `yaml:"urls"`
	TokenFile     string   `yaml:"token_file,omitempty"`
	CredsFile     string   `yaml:"credentials_file,omitempty"`
	ClaimTTL      string   `yaml:"claim_ttl,omitempty"`
	Replicas      int      `yaml:"replicas,omitempty"`
	OnUnreachable string   `yaml:"on_unreachable,omitempty"`
}

type logConfig struct {
	Level string `yaml:"level"`
}

type vmmConfig struct {
	Driver      string             `yaml:"driver,omitempty"`
	QEMU        *qemuConfig        `yaml:"qemu,omitempty"`
	Firecracker *firecrackerConfig `yaml:"firecracker,omitempty"`
}

type qemuConfig struct {
	Binary string `yaml:"binary,omitempty"`
}

type firecrackerConfig struct {
	Binary         string `yaml:"binary"`
	JailerBinary   string `yaml:"jailer_binary"`
	ChrootBaseDir  string `yaml:"chroot_base_dir"`
	UID            int    `yaml:"uid"`
	GID            int    `yaml:"gid"`
	MMDS           bool   `yaml:"mmds,omitempty"`
	APICallTimeout string `yaml:"api_call_timeout,omitempty"`
}

type imagesConfig struct {
	Dir string `yaml:"dir"`
}

type registryCacheConfig struct {
	Mirrors    []mirrorConfig `yaml:"mirrors"`
	HTTPProxy  string         `yaml:"http_proxy,omitempty"`
	HTTPSProxy string         `yaml:"https_proxy,omitempty"`
	CAFile     string         `yaml:"ca_file,omitempty"`
}

type mirrorConfig struct {
	Registry string   `yaml:"registry"`
	URLs     []string `yaml:"urls"`
}

type apiConfig struct {
	Socket     string `yaml:"socket"`
	Listen     string `yaml:"listen,omitempty"`
	TokensFile string `yaml:"tokens_file,omitempty"`
}

// metricsConfig is always written with its listen address: "" turns the
// endpoint off.
type metricsConfig struct {
	Listen string `yaml:"listen"`
}

type networkConfig struct {
	Bridge        string `yaml:"bridge"`
	CIDR          string `yaml:"cidr"`
	AllowTCPPorts []int  `yaml:"allow_tcp_ports,omitempty"`
}

type forgeConfig struct {
	Name              string `yaml:"name"`
	Type              string `yaml:"type"`
	URL               string `yaml:"url"`
	GuestURL          string `yaml:"guest_url,omitempty"`
	TokenFile         string `yaml:"token_file,omitempty"`
	AppID             int64  `yaml:"app_id,omitempty"`
	AppPrivateKeyFile string `yaml:"app_private_key_file,omitempty"`
	WebhookSecretFile string `yaml:"webhook_secret_file,omitempty"`
	PollInterval      string `yaml:"poll_interval,omitempty"`
	Flavor            string `yaml:"flavor,omitempty"`
}

type poolConfig struct {
	Name     string          `yaml:"name"`
	Forge    string          `yaml:"forge"`
	Scope    string          `yaml:"scope,omitempty"` // "": the default, instance
	Repos    []string        `yaml:"repos,omitempty"`
	Labels   []string        `yaml:"labels"`
	Demand   string          `yaml:"demand,omitempty"`
	MinIdle  int             `yaml:"min_idle"`
	Max      int             `yaml:"max"`
	VM       vmConfig        `yaml:"vm"`
	Runner   *runnerConfig   `yaml:"runner,omitempty"`
	Timeouts *timeoutsConfig `yaml:"timeouts,omitempty"`
	Cache    *poolCache      `yaml:"cache,omitempty"`
	// WarmStart restores the pool's VMs from a template.
	WarmStart bool `yaml:"warm_start,omitempty"`
}

// poolCache is a pool's cache: block; Docker starts dockerd in its VMs.
type poolCache struct {
	Docker bool `yaml:"docker,omitempty"`
}

type vmConfig struct {
	VCPUs         int      `yaml:"vcpus,omitempty"`
	MemoryMiB     int      `yaml:"memory_mib,omitempty"`
	Kernel        string   `yaml:"kernel"`
	ModulesDir    string   `yaml:"modules_dir,omitempty"`
	KernelModules []string `yaml:"kernel_modules,omitempty"`
	RootInitramfs string   `yaml:"root_initramfs,omitempty"` // or Image
	Image         string   `yaml:"image,omitempty"`
	PullPolicy    string   `yaml:"pull_policy,omitempty"`
	DiskMiB       int      `yaml:"disk_mib,omitempty"`
}

type runnerConfig struct {
	Path        string `yaml:"path,omitempty"`
	UID         int    `yaml:"uid,omitempty"`
	RunUntagged bool   `yaml:"run_untagged,omitempty"`
}

type timeoutsConfig struct {
	Boot string `yaml:"boot,omitempty"`
	Idle string `yaml:"idle,omitempty"`
	Job  string `yaml:"job,omitempty"`
}

// guestVM is a pool's VM with the host's kernel, its virtio modules and
// the guest root: every test's, its size left to the defaults.
func guestVM(kernel, modules, root string) vmConfig {
	return vmConfig{Kernel: kernel, ModulesDir: modules, KernelModules: []string{"virtio_mmio", "virtio_net"}, RootInitramfs: root}
}

// imageVM is a pool's VM booting image (a reference the test's registry
// serves) with the host's kernel and the modules an image root needs, its
// image pulled by policy onto a 1 GiB writable disk.
func imageVM(kernel, modules, image, policy string) vmConfig {
	return vmConfig{
		Kernel: kernel, ModulesDir: modules,
		KernelModules: []string{"virtio_mmio", "virtio_net", "virtio_blk", "overlay", "erofs"},
		Image:         image, PullPolicy: policy, DiskMiB: 1024,
	}
}

// gateway is the host's address on the VM network cidr: its first one.
func gateway(t *testing.T, cidr string) string {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatal(err)
	}
	return p.Masked().Addr().Next().String()
}

// yaml renders c.
func (c *orchConfig) yaml(t *testing.T) string {
	t.Helper()
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// write renders c to path, readable by root only (it names secrets'
// files).
func (c *orchConfig) write(t *testing.T, path string) {
	t.Helper()
	writeFile(t, path, 0o600, c.yaml(t))
}

// hostRig is what every rig starts with: the host's kernel, the
// binaries, a guest root, a network namespace; the configuration file is
// work/fireactions.yaml.
type hostRig struct {
	t                     *testing.T
	kernel, modules, root string
	bin, work, cfgPath    string
	ns                    *testNetns
}

// newHostRig sets the host up for a test in the network namespace
// nsName, the guest root built by buildRoot into root.
func newHostRig(t *testing.T, nsName string, buildRoot func(work, root string)) hostRig {
	t.Helper()
	requireRoot(t)
	r := hostRig{t: t}
	r.kernel, r.modules = hostKernel(t)
	r.bin = buildBinaries(t)
	r.work = t.TempDir()
	r.cfgPath = filepath.Join(r.work, "fireactions.yaml")
	r.root = filepath.Join(r.work, "root.cpio.gz")
	buildRoot(r.work, r.root)
	r.ns = newNetns(t, nsName)
	return r
}

// oneForgeConfig is the base configuration of an orchestrator host
// hostID, its state in state, serving forge f on port in the namespace
// (f's URL and guest URL set here: its VMs, on bridge in cidr, reach it
// on the gateway): debug log, a 1 minute drain, the API socket in the
// rig's work directory, no metrics endpoint, no pool yet.
func (r *hostRig) oneForgeConfig(hostID, state, bridge, cidr string, f forgeConfig, port string) *orchConfig {
	f.URL = "http://127.0.0.1:" + port
	f.GuestURL = "http://" + gateway(r.t, cidr) + ":" + port
	return &orchConfig{
		HostID:     hostID,
		StateDir:   state,
		Log:        logConfig{Level: "debug"},
		DrainGrace: "1m",
		API:        apiConfig{Socket: filepath.Join(r.work, "api.sock")},
		Metrics:    &metricsConfig{Listen: ""},
		Network:    networkConfig{Bridge: bridge, CIDR: cidr, AllowTCPPorts: []int{r.tcpPort(port)}},
		Forges:     []forgeConfig{f},
	}
}

// buildStandinRoot builds a guest root whose runner is the stand-in the
// build function makes in work, installed as inGuest.
func buildStandinRoot(t *testing.T, build func(*testing.T, string) string, inGuest string) func(work, root string) {
	return func(work, root string) {
		standin := build(t, work)
		if err := guestroot.Build(context.Background(), guestroot.DefaultSpec(standin, inGuest), root); err != nil {
			t.Fatal(err)
		}
	}
}

// serve serves h on port, on every address of the namespace, until the
// test ends.
func (r *hostRig) serve(h http.Handler, port string) {
	r.t.Helper()
	ln, err := r.ns.listen("tcp", "0.0.0.0:"+port)
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	r.t.Cleanup(func() { srv.Close() })
}

// start writes c as the rig's configuration file and starts an
// orchestrator on it.
func (r *hostRig) start(c *orchConfig) *orchestrator {
	r.t.Helper()
	c.write(r.t, r.cfgPath)
	return startOrchestrator(r.t, r.ns, r.bin, r.cfgPath, c.StateDir)
}

// shortStateDir is a state directory named for prefix under the system's
// temporary directory: socket paths under it must fit in 107 bytes.
func (r *hostRig) shortStateDir(prefix string) string {
	r.t.Helper()
	state, err := os.MkdirTemp("", prefix)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { os.RemoveAll(state) })
	return state
}

// tcpPort is port as a number.
func (r *hostRig) tcpPort(port string) int {
	n, err := strconv.Atoi(port)
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// giteaRig is what every Gitea test sets up before its orchestrator: the
// host's, with Gitea's runner in the guest root, and a Gitea in the
// namespace with its token on file.
type giteaRig struct {
	hostRig
	gitea            *giteaServer
	tokenFile, state string
}

// newGiteaRig sets a Gitea test up in the network namespace nsName.
func newGiteaRig(t *testing.T, nsName string) *giteaRig {
	t.Helper()
	cache := cacheDir()
	return newGiteaRigWith(t, nsName, func(_, root string) { buildGuestRoot(t, cache, root) })
}

// newGiteaImageRig sets a Gitea test of image-rooted pools up in the
// network namespace nsName: no guest root is built (the pools boot an
// image), but the Gitea runner the test's image holds must be built.
func newGiteaImageRig(t *testing.T, nsName string, extraINI ...string) *giteaRig {
	t.Helper()
	requireRoot(t)
	requireFile(t, giteaRunner(), "Gitea runner build (scripts/build-peers.sh)")
	return newGiteaRigWith(t, nsName, func(_, _ string) {}, extraINI...)
}

// giteaRunner is the Gitea runner binary the peers' build left in the
// cache.
func giteaRunner() string {
	return filepath.Join(cacheDir(), "runner-v1.0.8", "act_runner")
}

// newGiteaRigWith sets a Gitea test up in the network namespace nsName,
// the guest root built by buildRoot.
// extraINI goes into Gitea's app.ini (startGitea).
func newGiteaRigWith(t *testing.T, nsName string, buildRoot func(work, root string), extraINI ...string) *giteaRig {
	t.Helper()
	r := &giteaRig{hostRig: newHostRig(t, nsName, buildRoot)}
	r.gitea, r.tokenFile, r.state, r.cfgPath = startGiteaFor(t, r.ns, cacheDir(), r.work, extraINI...)
	return r
}

// config is the base configuration of an orchestrator host hostID
// serving the rig's Gitea, its files under dir (its state in dir/state,
// its API socket dir/api.sock), its VMs on bridge in cidr, which reach
// Gitea on the gateway: debug log, a 1 minute drain, no pool yet.
func (r *giteaRig) config(hostID, dir, bridge, cidr string) *orchConfig {
	gw := gateway(r.t, cidr)
	return &orchConfig{
		HostID:     hostID,
		StateDir:   filepath.Join(dir, "state"),
		Log:        logConfig{Level: "debug"},
		DrainGrace: "1m",
		API:        apiConfig{Socket: filepath.Join(dir, "api.sock")},
		Network:    networkConfig{Bridge: bridge, CIDR: cidr, AllowTCPPorts: []int{r.tcpPort(giteaPort)}},
		Forges: []forgeConfig{{
			Name: "gitea", Type: "gitea",
			URL:       "http://127.0.0.1:" + giteaPort,
			GuestURL:  "http://" + gw + ":" + giteaPort,
			TokenFile: r.tokenFile,
		}},
	}
}

// withWebhooks turns the webhooks of c's Gitea forge on: the API takes
// them on 127.0.0.1:apiPort (its bearer token, which webhooks do not
// need, on file), checked with a fresh secret, which it returns.
func (r *giteaRig) withWebhooks(c *orchConfig, apiPort string) (secret string) {
	r.t.Helper()
	secret = "hook-" + randHex(r.t)
	writeFile(r.t, filepath.Join(r.work, "gitea-hook"), 0o600, secret+"\n")
	writeFile(r.t, filepath.Join(r.work, "api-tokens"), 0o600, "api-"+randHex(r.t)+"\n")
	c.API.Listen, c.API.TokensFile = "127.0.0.1:"+apiPort, filepath.Join(r.work, "api-tokens")
	c.Forges[0].WebhookSecretFile = filepath.Join(r.work, "gitea-hook")
	return secret
}

// pool is a pool of the rig's Gitea at instance scope for jobs labelled
// label, at most max VMs of the default size, minIdle kept idle.
func (r *giteaRig) pool(name, label string, minIdle, max int) poolConfig {
	return poolConfig{
		Name: name, Forge: "gitea", Scope: "instance", Labels: []string{label},
		MinIdle: minIdle, Max: max, VM: guestVM(r.kernel, r.modules, r.root),
	}
}

// smallVMPool is the one pool of the fail-fast, budget and memo tests: one
// kept idle, up to 2 VMs of 1 vCPU and 256 MiB, 3 minutes to boot and 20
// for a job.
func (r *giteaRig) smallVMPool(name, label string) poolConfig {
	p := r.pool(name, label, 1, 2)
	p.VM.VCPUs, p.VM.MemoryMiB = 1, 256
	p.Timeouts = &timeoutsConfig{Boot: "3m", Job: "20m"}
	return p
}

// jobPool is a pool of the rig's Gitea for the job tests: minIdle kept
// idle, up to max VMs of 1 vCPU and 512 MiB, 2 minutes to boot and 10
// for a job.
func (r *giteaRig) jobPool(name, label string, minIdle, max int) poolConfig {
	p := r.pool(name, label, minIdle, max)
	p.VM.VCPUs, p.VM.MemoryMiB = 1, 512
	p.Timeouts = &timeoutsConfig{Boot: "2m", Job: "10m"}
	return p
}

// imagePool is an image-rooted pool of the rig's Gitea at the default
// scope for jobs labelled label: one VM, kept idle, of the default size
// booting image (imageVM) pulled by policy, 3 minutes to boot and 10 for
// a job.
func (r *giteaRig) imagePool(name, label, image, policy string) poolConfig {
	return poolConfig{
		Name: name, Forge: "gitea", Labels: []string{label}, MinIdle: 1, Max: 1,
		VM:       imageVM(r.kernel, r.modules, image, policy),
		Timeouts: &timeoutsConfig{Boot: "3m", Job: "10m"},
	}
}

// startSmallPool starts an orchestrator host hostID with one pool of
// small VMs (smallVMPool) on bridge in cidr, and waits for its idle VM.
func (r *giteaRig) startSmallPool(hostID, bridge, cidr, pool, label string) *orchestrator {
	r.t.Helper()
	cfg := r.config(hostID, r.work, bridge, cidr)
	cfg.Pools = []poolConfig{r.smallVMPool(pool, label)}
	o := r.start(cfg)
	o.waitFor(r.t, 4*time.Minute, "the min_idle VM to be idle", func() bool { return countPhase(r.state, "idle") >= 1 })
	return o
}

// oneVMConfig is the configuration of the crash, outage and side-by-side
// tests: a pool of one VM of the default size, none kept idle unless
// minIdle, a 3 minute drain, no metrics endpoint.
func (r *giteaRig) oneVMConfig(hostID, dir, bridge, cidr, pool, label string, minIdle int) *orchConfig {
	c := r.config(hostID, dir, bridge, cidr)
	c.DrainGrace = "3m"
	c.Metrics = &metricsConfig{Listen: ""}
	c.Pools = []poolConfig{r.pool(pool, label, minIdle, 1)}
	return c
}

// waitJobsDone waits for n jobs of repo completed at Gitea, and returns
// the completed ones in Gitea's order.
func (o *orchestrator) waitJobsDone(t *testing.T, within time.Duration, what string, g *giteaServer, repo string, n int) []job {
	t.Helper()
	var done []job
	o.waitFor(t, within, what, func() bool {
		done = done[:0]
		for _, j := range g.jobs(repo) {
			if j.Status == "completed" {
				done = append(done, j)
			}
		}
		return len(done) >= n
	})
	return done
}

// forgejoRig is what a Forgejo test sets up before its orchestrator
// (Forgejo itself cannot be built here): the host's, with the stand-in
// forgejo-runner and Gitea's act_runner beside it in the guest root, a
// real Gitea in the namespace, and the Forgejo double in front of it on
// fjPort (Forgejo's REST calls answered from Gitea's jobs and runners,
// the runner protocol passed through to Gitea), its site admin's token
// on file. Guests reach only the double.
type forgejoRig struct {
	hostRig
	gitea            *giteaServer
	fj               *forgejodouble.Double
	tokenFile, state string
}

const fjPort = "3300"

// newForgejoRig sets a Forgejo test up in the network namespace nsName.
func newForgejoRig(t *testing.T, nsName string) *forgejoRig {
	t.Helper()
	cache := cacheDir()
	r := &forgejoRig{hostRig: newHostRig(t, nsName, func(work, root string) { buildForgejoGuestRoot(t, cache, work, root) })}
	r.gitea, _, r.state, r.cfgPath = startGiteaFor(t, r.ns, cache, r.work)
	token := "fjtok-" + randHex(t)
	r.fj = forgejodouble.NewFront(map[string]forgejodouble.Token{token: {Scopes: []string{"write:admin"}, SiteAdmin: true}},
		forgejodouble.Upstream{URL: r.gitea.url, Token: r.gitea.token, HTTP: r.ns.httpClient()})
	r.serve(r.fj.Handler(), fjPort)
	r.tokenFile = filepath.Join(r.work, "forgejo-token")
	writeFile(t, r.tokenFile, 0o600, token+"\n")
	return r
}

// config is the base configuration of an orchestrator host hostID
// serving the rig's Forgejo (flavor left to detection), its VMs on bridge
// in cidr, which reach the double on the gateway: debug log, a 1 minute
// drain, no metrics endpoint, no pool yet.
func (r *forgejoRig) config(hostID, bridge, cidr string) *orchConfig {
	return r.oneForgeConfig(hostID, r.state, bridge, cidr, forgeConfig{Name: "forgejo", Type: "gitea", TokenFile: r.tokenFile}, fjPort)
}

// pool is an instance pool of the rig's Forgejo for jobs labelled label,
// its runner forgejo-runner.
func (r *forgejoRig) pool(name, label string, minIdle, max int) poolConfig {
	return poolConfig{
		Name: name, Forge: "forgejo", Scope: "instance", Labels: []string{label},
		MinIdle: minIdle, Max: max, VM: guestVM(r.kernel, r.modules, r.root),
		Runner: &runnerConfig{Path: "/bin/forgejo-runner"},
	}
}

// buildForgejoGuestRoot builds a guest root with the stand-in
// forgejo-runner at /bin/forgejo-runner and act_runner, which it runs,
// beside it.
func buildForgejoGuestRoot(t *testing.T, cache, work, root string) {
	t.Helper()
	act := filepath.Join(cache, "runner-v1.0.8", "act_runner")
	requireFile(t, act, "Gitea runner build (scripts/build-peers.sh)")
	standin := filepath.Join(work, "forgejo-runner")
	cmd := exec.Command("go", "build", "-trimpath", "-o", standin, "../internal/double/forgejodouble/cmd/forgejo-runner")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in forgejo-runner: %v\n%s", err, b)
	}
	spec := guestroot.DefaultSpec(standin, "/bin/forgejo-runner")
	spec.Files["/bin/act_runner"] = act
	if err := guestroot.Build(context.Background(), spec, root); err != nil {
		t.Fatal(err)
	}
}

// gitlabRig is what every GitLab test sets up before its orchestrator:
// the host's, with the stand-in gitlab-runner in the guest root, the
// GitLab double serving on glPort in the namespace (project acme/app),
// its access token on file as work/gitlab-token, and a short state
// directory.
type gitlabRig struct {
	hostRig
	state       string
	gl          *gitlabdouble.Server
	accessToken string
}

// newGitLabRig sets a GitLab test up, its namespace and state directory
// named for prefix.
func newGitLabRig(t *testing.T, prefix string) *gitlabRig {
	t.Helper()
	r := &gitlabRig{hostRig: newHostRig(t, fmt.Sprintf("%s%d", prefix, os.Getpid()%100000),
		buildStandinRoot(t, buildStandinRunner, "/usr/bin/gitlab-runner"))}
	r.accessToken = "glpat-" + randHex(t)
	r.gl = gitlabdouble.New(r.accessToken)
	t.Cleanup(r.gl.Close)
	r.gl.AddProject("acme/app")
	r.serve(r.gl.Handler(), glPort)
	writeFile(t, filepath.Join(r.work, "gitlab-token"), 0o600, r.accessToken+"\n")
	r.state = r.shortStateDir(prefix)
	return r
}

// config is the base configuration of an orchestrator host hostID
// serving the rig's GitLab double, its VMs on bridge in cidr, which
// reach the double on the gateway: debug log, a 1 minute drain, no
// metrics endpoint, no pool yet.
func (r *gitlabRig) config(hostID, bridge, cidr string) *orchConfig {
	return r.oneForgeConfig(hostID, r.state, bridge, cidr, forgeConfig{Name: "gitlab", Type: "gitlab", TokenFile: filepath.Join(r.work, "gitlab-token")}, glPort)
}

// pool is a pool of project acme/app at the rig's GitLab for jobs tagged
// labels, none kept idle, at most max VMs of 1 vCPU and 512 MiB, 2
// minutes to boot and 10 for a job.
func (r *gitlabRig) pool(name string, labels []string, max int) poolConfig {
	vm := guestVM(r.kernel, r.modules, r.root)
	vm.VCPUs, vm.MemoryMiB = 1, 512
	return poolConfig{
		Name: name, Forge: "gitlab", Scope: "project:acme/app", Labels: labels,
		MinIdle: 0, Max: max, VM: vm,
		Timeouts: &timeoutsConfig{Boot: "2m", Job: "10m"},
	}
}

// githubRig is what every GitHub test sets up before its double and
// orchestrator: the host's, with the stand-in run.sh in the guest root,
// an App key, the API description and webhook examples, the App key,
// webhook secret and API token on file in work, and a short state
// directory.
type githubRig struct {
	hostRig
	state                string
	key                  *rsa.PrivateKey
	keyPEM               []byte
	spec                 *openapi.Description
	examples             []byte
	hookSecret, apiToken string
}

// newGitHubRig sets a GitHub test up, its namespace and state directory
// named for prefix.
func newGitHubRig(t *testing.T, prefix string) *githubRig {
	t.Helper()
	r := &githubRig{hostRig: newHostRig(t, fmt.Sprintf("%s%d", prefix, os.Getpid()%100000),
		buildStandinRoot(t, buildGitHubStandin, "/home/runner/run.sh"))}
	var err error
	if r.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	r.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(r.key)})
	if r.spec, err = githubdouble.LoadSpec("../forge/github/testdata/github-actions-runners.openapi.json"); err != nil {
		t.Fatal(err)
	}
	if r.examples, err = os.ReadFile("../forge/github/testdata/github-workflow_job.examples.json"); err != nil {
		t.Fatal(err)
	}
	r.hookSecret, r.apiToken = "hook-"+randHex(t), "api-"+randHex(t)
	writeFile(t, filepath.Join(r.work, "app.pem"), 0o600, string(r.keyPEM))
	writeFile(t, filepath.Join(r.work, "hook"), 0o600, r.hookSecret+"\n")
	writeFile(t, filepath.Join(r.work, "api-tokens"), 0o600, r.apiToken+"\n")
	r.state = r.shortStateDir(prefix)
	return r
}

// config is the base configuration of an orchestrator host hostID, as
// GitHub App appID of the double on port, its API (webhooks) on
// 127.0.0.1:apiPort, its VMs on bridge in cidr, which reach the double on
// the gateway: debug log, a 1 minute drain, no metrics endpoint, no pool
// yet.
func (r *githubRig) config(hostID, bridge, cidr, port, apiPort string, appID int64, poll string) *orchConfig {
	return &orchConfig{
		HostID:     hostID,
		StateDir:   r.state,
		Log:        logConfig{Level: "debug"},
		DrainGrace: "1m",
		API: apiConfig{
			Socket: filepath.Join(r.work, "api.sock"), Listen: "127.0.0.1:" + apiPort,
			TokensFile: filepath.Join(r.work, "api-tokens"),
		},
		Metrics: &metricsConfig{Listen: ""},
		Network: networkConfig{Bridge: bridge, CIDR: cidr, AllowTCPPorts: []int{r.tcpPort(port)}},
		Forges: []forgeConfig{{
			Name: "github", Type: "github",
			URL:               "http://127.0.0.1:" + port,
			AppID:             appID,
			AppPrivateKeyFile: filepath.Join(r.work, "app.pem"),
			WebhookSecretFile: filepath.Join(r.work, "hook"),
			PollInterval:      poll,
		}},
	}
}

// pool is a pool of org acme's repository widgets for jobs labelled
// labels, its demand from webhooks and polling, none kept idle, at most max VMs of 1 vCPU and 512 MiB, the
// runner as uid 1001, 2 minutes to boot, 20 s idle and 10 minutes for a
// job.
func (r *githubRig) pool(name string, labels []string, max int) poolConfig {
	vm := guestVM(r.kernel, r.modules, r.root)
	vm.VCPUs, vm.MemoryMiB = 1, 512
	return poolConfig{
		Name: name, Forge: "github", Scope: "org:acme", Repos: []string{"acme/widgets"}, Labels: labels,
		Demand: "webhooks", MinIdle: 0, Max: max, VM: vm,
		Runner:   &runnerConfig{UID: 1001},
		Timeouts: &timeoutsConfig{Boot: "2m", Idle: "20s", Job: "10m"},
	}
}
