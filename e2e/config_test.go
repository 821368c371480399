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
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nixos-fireactions/nixos-fireactions/guestroot"
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
	HostID            string         `yaml:"host_id"`
	StateDir          string         `yaml:"state_dir"`
	Log               logConfig      `yaml:"log"`
	VMM               *vmmConfig     `yaml:"vmm,omitempty"`
	DrainGrace        string         `yaml:"drain_grace,omitempty"`
	ReconcileInterval string         `yaml:"reconcile_interval,omitempty"`
	API               apiConfig      `yaml:"api"`
	Metrics           *metricsConfig `yaml:"metrics,omitempty"` // nil: the default endpoint
	Network           networkConfig  `yaml:"network"`
	Forges            []forgeConfig  `yaml:"forges"`
	Pools             []poolConfig   `yaml:"pools"`
}

type logConfig struct {
	Level string `yaml:"level"`
}

type vmmConfig struct {
	QEMU struct {
		Binary string `yaml:"binary,omitempty"`
	} `yaml:"qemu"`
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
}

type poolConfig struct {
	Name     string          `yaml:"name"`
	Forge    string          `yaml:"forge"`
	Scope    string          `yaml:"scope"`
	Repos    []string        `yaml:"repos,omitempty"`
	Labels   []string        `yaml:"labels"`
	Demand   string          `yaml:"demand,omitempty"`
	MinIdle  int             `yaml:"min_idle"`
	Max      int             `yaml:"max"`
	VM       vmConfig        `yaml:"vm"`
	Runner   *runnerConfig   `yaml:"runner,omitempty"`
	Timeouts *timeoutsConfig `yaml:"timeouts,omitempty"`
}

type vmConfig struct {
	VCPUs         int      `yaml:"vcpus,omitempty"`
	MemoryMiB     int      `yaml:"memory_mib,omitempty"`
	Kernel        string   `yaml:"kernel"`
	ModulesDir    string   `yaml:"modules_dir"`
	KernelModules []string `yaml:"kernel_modules"`
	RootInitramfs string   `yaml:"root_initramfs"`
}

type runnerConfig struct {
	UID         int  `yaml:"uid,omitempty"`
	RunUntagged bool `yaml:"run_untagged,omitempty"`
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
	r := &giteaRig{hostRig: newHostRig(t, nsName, func(_, root string) { buildGuestRoot(t, cache, root) })}
	r.gitea, r.tokenFile, r.state, r.cfgPath = startGiteaFor(t, r.ns, cache, r.work)
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
	return &orchConfig{
		HostID:     hostID,
		StateDir:   r.state,
		Log:        logConfig{Level: "debug"},
		DrainGrace: "1m",
		API:        apiConfig{Socket: filepath.Join(r.work, "api.sock")},
		Metrics:    &metricsConfig{Listen: ""},
		Network:    networkConfig{Bridge: bridge, CIDR: cidr, AllowTCPPorts: []int{r.tcpPort(glPort)}},
		Forges: []forgeConfig{{
			Name: "gitlab", Type: "gitlab",
			URL:       "http://127.0.0.1:" + glPort,
			GuestURL:  "http://" + gateway(r.t, cidr) + ":" + glPort,
			TokenFile: filepath.Join(r.work, "gitlab-token"),
		}},
	}
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
