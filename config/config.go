// Package config is the orchestrator's one configuration schema: the YAML
// file `fireactions serve` and `fireactions validate` read. Unknown keys are
// errors, defaults live in Defaults and nowhere else, secrets come only from
// files or the environment, and every validation error names its field.
package config

import "time"

// Config is the whole file.
type Config struct {
	// HostID names this host in forge runner names, so several hosts can
	// share one forge scope without touching each other's runners.
	HostID   string `yaml:"host_id" doc:"Names this host in runner names (fa-<host_id>-<vm>); 1-20 characters of a-z, 0-9 and '-'. Default: the machine's hostname, lower-cased, other characters turned into '-', cut to 20."`
	StateDir string `yaml:"state_dir" doc:"Absolute directory for per-VM state, logs and boot files."`
	// AgentPath is the guest agent binary put into every VM as /init; ""
	// means fireactions-agent in the directory of the running binary.
	AgentPath string `yaml:"agent_path" doc:"Absolute path of an existing guest agent binary (fireactions-agent). Empty: fireactions-agent beside the fireactions binary."`
	// DrainGrace is how long SIGTERM waits for busy VMs, shared by all
	// pools, before they are killed.
	DrainGrace time.Duration `yaml:"drain_grace" doc:"On SIGTERM, how long busy VMs may finish their jobs before they are killed; one period shared by all pools (positive)."`
	// ReconcileInterval is the period of the reconcile loop.
	ReconcileInterval time.Duration `yaml:"reconcile_interval" doc:"How often pools are reconciled with the forges (at least 200ms)."`
	Log               Log           `yaml:"log" doc:"The orchestrator's own logging."`
	API               API           `yaml:"api" doc:"The control API: pools' status, scaling, pausing and draining."`
	Metrics           Metrics       `yaml:"metrics" doc:"The Prometheus metrics endpoint."`
	ConsoleLogs       ConsoleLogs   `yaml:"console_logs" doc:"Serial console logs of VMs that failed."`
	Network           Network       `yaml:"network" doc:"The host side of the VMs' network: one bridge, one TAP per VM."`
	VMM               VMM           `yaml:"vmm" doc:"The hypervisor driver."`
	Forges            []Forge       `yaml:"forges" doc:"Forge connections; pools refer to them by name."`
	Images            Images        `yaml:"images" doc:"The store of OCI images that pools with vm.image boot from."`
	RegistryCache     RegistryCache `yaml:"registry_cache" doc:"The host's registry cache and web proxy, given to the guests of every pool that does not set cache.bypass (and used by the image store's pulls); see config/cache.go. Ports of its URLs on the gateway are added to network.allow_tcp_ports."`
	Pools             []Pool        `yaml:"pools" doc:"Pools of identical VMs, each serving the jobs whose labels it offers. At least one."`
	Fleet             *Fleet        `yaml:"fleet" doc:"Share demand with other hosts through NATS JetStream, so that no queued job boots a VM on two hosts (see docs/fleet.md). Absent: this host serves every job it sees."`
	Limits            Limits        `yaml:"limits" doc:"Bounds on what guests and anonymous clients can make the host hold: HTTP timeouts, connection caps, webhook body sizes (see config/limits.go)."`
}

// Log is the orchestrator's own logging.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error."`
	Format string `yaml:"format" doc:"text or json."`
}

// API is the control API: always on a Unix socket, optionally on TCP.
type API struct {
	Socket string `yaml:"socket" doc:"Absolute path of the API's Unix socket (at most 107 bytes)."`
	// Listen is a TCP host:port for the API; "" serves it on the socket only.
	Listen string `yaml:"listen" doc:"TCP host:port to serve the API on as well, for remote clients with a bearer token; empty: off."`
	// TokensFile holds the bearer tokens TCP clients must present.
	TokensFile  string `yaml:"tokens_file" doc:"File of bearer tokens accepted on listen, one a line (blank lines and lines starting with '#' ignored); mode 600 (or 400), owned by root or the user running fireactions. Required when listen is set."`
	TLSCertFile string `yaml:"tls_cert_file" doc:"PEM certificate (chain) to serve listen with TLS; set with tls_key_file. Neither: plain HTTP."`
	TLSKeyFile  string `yaml:"tls_key_file" doc:"PEM private key of tls_cert_file; mode 600."`
	// AllowPlaintext lets Listen be a non-loopback address without TLS.
	AllowPlaintext bool `yaml:"allow_plaintext" doc:"Serve listen without TLS on an address other hosts can reach (bearer tokens and pool data cross the network in clear). Off: such a listen is refused; loopback addresses (127.0.0.0/8, ::1, localhost) may always go without TLS."`
	// Tokens are the bearer tokens read from TokensFile by Load.
	Tokens []string `yaml:"-"`
}

// Metrics is the Prometheus metrics endpoint.
type Metrics struct {
	Listen string `yaml:"listen" doc:"TCP host:port serving /metrics; empty: off."`
}

// ConsoleLogs keeps the serial console logs of VMs that failed.
type ConsoleLogs struct {
	Keep time.Duration `yaml:"keep" doc:"How long failed VMs' serial console logs are kept under state_dir (0: deleted with the VM)."`
	// KeepMaxMiB caps the kept logs together: jobs that fail their own
	// VMs at will cannot fill the host's disk within keep.
	KeepMaxMiB int `yaml:"keep_max_mib" doc:"Cap of all kept console logs together in MiB: past it the oldest are deleted first, checked every minute (1-1048576)."`
	// MaxKiB caps each VM's console log, live and kept: a guest writing
	// its serial port without end cannot fill the host's disk.
	MaxKiB int `yaml:"max_kib" doc:"Cap of each VM's serial console log in KiB, live and the copy kept of a failed VM; past it the log keeps its first eighth and its most recent bytes, with a line counting what was dropped between (4-1048576)."`
}

// Network is the host side of the VMs' network: one bridge, one TAP per VM.
type Network struct {
	Bridge  string   `yaml:"bridge" doc:"Bridge the VMs' TAPs join (at most 15 bytes; not lo, all or default)."`
	CIDR    string   `yaml:"cidr" doc:"IPv4 prefix the VMs' addresses come from: prefix length /16 to /30, outside 0.0.0.0/8, loopback (127/8), link-local (169.254/16), multicast (224/4) and reserved (240/4) space. Its guest addresses (all but the network, gateway and broadcast addresses: 2^(32-length) - 3) must be at least the sum of the pools' max."`
	Gateway string   `yaml:"gateway" doc:"The bridge's address; must be a host address of cidr. Default: the first host address of cidr."`
	DNS     []string `yaml:"dns" doc:"DNS servers given to guests. Default: the gateway."`
	MTU     int      `yaml:"mtu" doc:"MTU of the guest interface (576-9000)."`
	NAT     *bool    `yaml:"nat" doc:"Masquerade VM egress with nftables."`
	// AgentPort is where the orchestrator listens, on the gateway address,
	// for the guest agents' state reports.
	AgentPort int `yaml:"agent_port" doc:"TCP port on the gateway address for guest agent reports."`
	// Isolation: what guests may reach besides the internet.
	AllowTCPPorts    []int `yaml:"allow_tcp_ports" doc:"Gateway TCP ports guests may reach besides agent_port (e.g. a forge or cache on the host)."`
	AllowUDPPorts    []int `yaml:"allow_udp_ports" doc:"Gateway UDP ports guests may reach (53 is added when dns lists the gateway)."`
	BlockPrivate     bool  `yaml:"block_private" doc:"Drop guest egress to RFC 1918 and 100.64/10 ranges (169.254/16 is always dropped)."`
	NewConnPerSecond int   `yaml:"new_conn_per_second" doc:"Per-VM limit of new outgoing connections per second (0: none)."`
	KBytesPerSecond  int   `yaml:"kbytes_per_second" doc:"Per-VM limit of traffic sent, in KiB per second (0: none)."`
}

// VMM chooses and tunes the hypervisor driver.
type VMM struct {
	Driver      string      `yaml:"driver" doc:"qemu or firecracker."`
	QEMU        QEMU        `yaml:"qemu" doc:"Settings of the QEMU microvm driver."`
	Firecracker Firecracker `yaml:"firecracker" doc:"Settings of the Firecracker driver and its jailer."`
}

// QEMU tunes the QEMU microvm driver.
type QEMU struct {
	Binary string `yaml:"binary" doc:"The qemu-system-x86_64 binary: an absolute path, or a name looked up in PATH."`
	Accel  string `yaml:"accel" doc:"auto (KVM when /dev/kvm really runs a guest, else TCG), kvm or tcg."`
}

// Forge is one connection to a forge.
type Forge struct {
	Name string `yaml:"name" doc:"Required, unique. How pools refer to this forge."`
	Type string `yaml:"type" doc:"Required: gitea, github or gitlab."`
	// URL is the forge's API base: for GitHub https://api.github.com or a
	// GHES https://HOST/api/v3.
	URL string `yaml:"url" doc:"Base http(s) URL of the forge, as the host reaches it; for github the REST API base (GitHub Enterprise Server: https://HOST/api/v3). Required for gitea and gitlab. Default: https://api.github.com for github. No user or password in it: the credential goes in token_file."`
	// GuestURL is the forge's URL as guests reach it, when it differs.
	GuestURL  string `yaml:"guest_url" doc:"Base URL as guests reach it, with no user or password (every VM gets it). Default: url."`
	TokenFile string `yaml:"token_file" doc:"File holding the scope-wide API token (never given to a VM); mode 600 (or 400; never group/other readable or writable), owned by root or the user running fireactions, surrounding whitespace ignored. gitea and gitlab: exactly one of token_file and token_env is required; github: either a personal access token this way or app_id and app_private_key_file."`
	TokenEnv  string `yaml:"token_env" doc:"Environment variable holding the API token, instead of token_file."`
	// Flavor is which server a gitea forge is: Gitea or Forgejo.
	Flavor string `yaml:"flavor" doc:"gitea only: gitea, forgejo or auto. Forgejo keeps Gitea's runner protocol but takes the registration token and lists demand at other paths, and its runner (forgejo-runner at runner.path, default /bin/forgejo-runner with flavor forgejo) runs one job with one-job. auto: asked of the server (GET /api/forgejo/v1/version answers on Forgejo only) at first use and kept; runner.path then defaults to act_runner's, so set it for a Forgejo. Default: auto."`
	CAFile string `yaml:"ca_file" doc:"PEM bundle to trust for the forge's TLS certificate."`
	// AppID, AppPrivateKeyFile and InstallationID authenticate as a
	// GitHub App instead of with a token.
	AppID             int64  `yaml:"app_id" doc:"github only: the GitHub App's ID, to authenticate as the App instead of with a token; set with app_private_key_file."`
	AppPrivateKeyFile string `yaml:"app_private_key_file" doc:"github only: the GitHub App's private key (PEM, RSA PRIVATE KEY or PRIVATE KEY); mode 600."`
	// InstallationID is 0 when the App's installation is to be looked up
	// from the pool's scope.
	InstallationID int64 `yaml:"installation_id" doc:"github only, with app_id: the App installation to act as, for the pools that set none of their own. 0 or left out: looked up from each pool's scope."`
	// PollInterval is how often a GitHub forge polls its pools'
	// repositories for queued jobs.
	PollInterval time.Duration `yaml:"poll_interval" doc:"github only: how often the pools' repositories are polled for queued jobs (polling heals missed or out-of-order webhook deliveries; at least 1s). Default: 30s, or 2m when webhook_secret_file is set."`
	// CancelRuns is what a runner that died before its job ended does
	// to the job's workflow run at GitHub: CancelRunsForce, CancelRunsCancel
	// or CancelRunsOff.
	CancelRuns string `yaml:"cancel_runs" doc:"github only: what the host does when a VM's runner dies before its job ends (the job broke it, the VM crashed, a timeout or drain ended it). GitHub has no call that fails one job, so the job's whole workflow run is cancelled. force: cancel the run, then, as the dead runner cannot stop its job, force-cancel the run when that job is the only one of it not completed, which ends the job at once; while another job of the run still runs (an if: always() clean-up on another runner) the run is only cancelled, as with cancel, so that a guest cannot end other runners' jobs. cancel: only cancel the run: its other jobs are cancelled as GitHub cancels any run (if: always() jobs and steps still run), and the dead runner's job ends after GitHub's 5-minute cancellation timeout; until then GitHub holds the dead runner busy, so removing it fails (422) and is retried with the VM deregistering, a WARN at each attempt (about a dozen per dead runner). off: leave the run alone; GitHub fails the job once it finds the runner lost. force and cancel need the App installation's actions: write permission, or a personal access token (classic) with the repo scope. Default: force."`
	// WebhookSecretFile holds the secret webhooks are checked with.
	WebhookSecretFile string `yaml:"webhook_secret_file" doc:"file holding the webhook secret (github: the HMAC secret; gitea: the webhook's secret, checked against X-Gitea-Signature, content type application/json, workflow_job events; gitlab: the X-Gitlab-Token); mode 600, owned by root or the user running fireactions, surrounding whitespace ignored. Empty: no webhooks (deliveries get 404). Polling stays on: it heals lost deliveries."`
	// Token is the secret read from TokenFile or TokenEnv by Load; empty
	// for a GitHub App.
	Token string `yaml:"-"`
	// AppPrivateKey is the PEM file read from AppPrivateKeyFile by Load.
	AppPrivateKey []byte `yaml:"-"`
	// WebhookSecret is the secret read from WebhookSecretFile by Load.
	WebhookSecret string `yaml:"-"`
}

// Pool is a set of identical VMs serving jobs with matching labels.
type Pool struct {
	Name  string `yaml:"name" doc:"Required, unique pool name: 1-31 characters of a-z, 0-9 and '-', starting with a letter or digit."`
	Forge string `yaml:"forge" doc:"Required. Name of an entry in forges."`
	// Scope is where runners are registered: "instance", "org:NAME",
	// "repo:OWNER/NAME", "enterprise:NAME", "group:PATH" or
	// "project:PATH"; see ParseScope.
	Scope  string   `yaml:"scope" doc:"Where runners register. gitea: instance, org:NAME or repo:OWNER/NAME; github: org:NAME, repo:OWNER/NAME or enterprise:NAME (enterprise: its forge needs a classic personal access token with manage_runners:enterprise; GitHub takes no App there); gitlab: instance, group:PATH or project:PATH (PATH may be nested: group/sub). github pools must set it."`
	Labels []string `yaml:"labels" doc:"Required. Labels the runners offer (no spaces, commas, control characters or duplicates; gitea: no ':', which act_runner reads as label:schema); a job runs here when all its labels are offered."`
	// Repos are the repositories whose queued runs a GitHub org or
	// enterprise pool polls for.
	Repos []string `yaml:"repos" doc:"github only, with an org or enterprise scope: the repositories (OWNER/NAME) whose queued workflow runs are polled for jobs. With demand: webhooks, such a pool needs these or its forge's webhook_secret_file (a source of demand)."`
	// InstallationID is the GitHub App installation the pool acts as,
	// when its forge's is not the one (two organisations under one App).
	InstallationID int64 `yaml:"installation_id" doc:"github only, with the forge's app_id: the App installation this pool acts as (each installation has its own rate budget), for pools of one App in several organisations. 0 or left out: the forge's installation_id, else looked up from the pool's scope."`
	// Demand is where a GitHub pool learns of jobs: DemandScaleSet or
	// DemandWebhooks.
	Demand   string        `yaml:"demand" doc:"github only: where the pool learns of jobs. scaleset: a runner scale set of its own, named <pool>-<host_id> with the pool's labels and runner group, created or updated at start and kept over restarts (fireactions github delete-scaleset removes it); GitHub assigns each job to one scale set with room, so hosts sharing labels never both start a VM for a job. webhooks: workflow_job webhooks and polling of repos. Default: scaleset for org and enterprise scopes, webhooks for repo scopes."`
	MinIdle  int           `yaml:"min_idle" doc:"Idle VMs kept ready (0 or more)."`
	Max      int           `yaml:"max" doc:"Most VMs at once, busy or not (1-4096 and at least min_idle; the pools' max together at most network.cidr's guest addresses). The API's scale obeys the same bound."`
	VM       VMShape       `yaml:"vm" doc:"Size and boot files of the pool's VMs."`
	Runner   RunnerOptions `yaml:"runner" doc:"The forge's runner agent inside the guest."`
	Cache    PoolCache     `yaml:"cache" doc:"What the guests take of registry_cache, and Docker."`
	Timeouts Timeouts      `yaml:"timeouts" doc:"Time limits for every stage of a VM's life."`
	// WarmStart restores the pool's VMs from a template instead of
	// booting them (see package warmstart).
	WarmStart bool `yaml:"warm_start" doc:"Start the pool's VMs by restoring a template (a VM booted until its agent waits for its identity, saved by the VMM, rebuilt when the VMM version, kernel, boot archive, agent or, for vm.image, the image's digest or vm.disk_mib changes) instead of booting each; each restore is handed its own address, MAC, hostname, runner credential and random seed over a virtio-serial port (qemu) or a vsock port (firecracker: its snapshot API, the template's state and memory files kept beside each other), and any VM whose restore fails boots cold (fireactions_warm_start_fallbacks_total), unless the failed restore's monitor could not be killed: that VM fails and keeps its slot (reason restore_kill_failed). vmm.driver qemu or firecracker; vm.image pools with qemu only. With vm.image the template boots with the image's drive and a writable disk it never mounts, and each restore attaches its own writable disk; a VM whose image moved to another digest than its template's boots cold while the template is rebuilt. The identity channel's driver (qemu: virtio_console; firecracker: vsock and vmw_vsock_virtio_transport) is added to a pool's kernel_modules when it lists any (else it must be built in). The template's build holds one of network.cidr's guest addresses while it builds, counted with the pools' max. Restores share the template's unwritten memory pages on the host: a job can time its reads of them to learn what code other VMs of the pool run (a cache-timing side channel, as with page deduplication), so turn it on for pools whose jobs share one trust domain, not for one that mixes tenants. Default: false."`
}

// VMShape is the size and boot files of a pool's VMs.
type VMShape struct {
	VCPUs     int    `yaml:"vcpus" doc:"Virtual CPUs per VM (1-32)."`
	MemoryMiB int    `yaml:"memory_mib" doc:"Memory per VM in MiB (128 to 1048576, 1 TiB)."`
	Kernel    string `yaml:"kernel" doc:"Required. Guest kernel image (bzImage for QEMU, vmlinux for Firecracker)."`
	// KernelModules are loaded by the agent, dependencies first; names are
	// resolved through modules.dep in ModulesDir.
	KernelModules []string `yaml:"kernel_modules" doc:"Guest kernel modules to load (names; dependencies are added). The guests need virtio_mmio and virtio_net (and for vm.image virtio_blk, ext4, overlay and erofs) built in or listed here; fireactions doctor checks."`
	ModulesDir    string   `yaml:"modules_dir" doc:"Module tree for kernel_modules. Default: /lib/modules/<version from the kernel file name>."`
	// RootInitramfs is the guest's root file system as a cpio archive
	// (gzip or not): the runner agent and what jobs need. The host adds
	// its agent as /init, the modules and the VM's config on top.
	RootInitramfs string `yaml:"root_initramfs" doc:"cpio archive with the guest root (runner agent, shell, tools). Exactly one of root_initramfs and image is required."`
	// Image is the guest root as an OCI image instead; see config/image.go.
	Image      string `yaml:"image" doc:"OCI image reference of the guest root, instead of root_initramfs (for example ghcr.io/org/runner:latest, or @sha256:…): pulled into the image store, flattened once per digest and attached read-only to every VM, each with its own writable disk. The guest kernel needs virtio_blk, overlay and erofs (or ext4): list them in kernel_modules unless built in."`
	PullPolicy string `yaml:"pull_policy" doc:"With image: Always (resolve the tag at start and every images.refresh, pulling a new digest), IfNotPresent (pull only when the store has nothing for the reference) or Never (the store only; see fireactions image pull)."`
	DiskMiB    int    `yaml:"disk_mib" doc:"With image: each VM's writable disk in MiB (sparse: only what a job writes takes host disk; 64 to 16777216, 16 TiB)."`
	Cmdline    string `yaml:"cmdline" doc:"Extra kernel command line arguments."`
}

// RunnerOptions tunes the forge's runner agent inside the guest.
type RunnerOptions struct {
	Path          string        `yaml:"path" doc:"The runner agent's absolute path inside the guest. Default per forge (gitea: /bin/act_runner, or /bin/forgejo-runner with flavor forgejo; github: /home/runner/run.sh, the actions-runner image's layout; gitlab: /usr/bin/gitlab-runner)."`
	User          string        `yaml:"user" doc:"Unprivileged user the runner runs as."`
	UID           int           `yaml:"uid" doc:"The runner user's UID (1-65534; never root)."`
	GID           int           `yaml:"gid" doc:"The runner user's primary GID (1-65534). Default: uid."`
	FetchInterval time.Duration `yaml:"fetch_interval" doc:"How often the runner asks the forge for its job (at least 100ms). gitlab: written as check_interval, which gitlab-runner's run-single ignores: it asks every 3s."`
	// Group is the GitHub runner group; "" is the default group.
	Group string `yaml:"group" doc:"github only: the runner group the runners join: its name or numeric id at org scope, its id at enterprise scope; repositories have none. Empty: the default group."`
	// RunUntagged, Locked, AccessLevel, MaximumTimeout, Executor and
	// DefaultImage are the GitLab runner's settings.
	RunUntagged bool `yaml:"run_untagged" doc:"gitlab only: also take jobs without tags."`
	// Locked is nil for pools of other forge types.
	Locked         *bool         `yaml:"locked" doc:"gitlab only: lock the runners to the project they register on. Default: true (gitlab)."`
	AccessLevel    string        `yaml:"access_level" doc:"gitlab only: not_protected or ref_protected (jobs of protected branches and tags only). Default: not_protected (gitlab)."`
	MaximumTimeout time.Duration `yaml:"maximum_timeout" doc:"gitlab only: the longest a job may run on these runners, capping the projects' job timeouts (0: no cap; else at least 10m, GitLab's minimum)."`
	Executor       string        `yaml:"executor" doc:"gitlab only: auto, shell or docker. auto: docker in a guest that runs dockerd (cache.docker and the image has dockerd), else shell. Default: auto (gitlab)."`
	DefaultImage   string        `yaml:"default_image" doc:"gitlab only: the image of jobs that name none, under the docker executor (GitLab's runners.docker.image). Default: alpine:latest (gitlab)."`
}

// Timeouts bound every stage of a VM's life.
type Timeouts struct {
	Boot time.Duration `yaml:"boot" doc:"VMM start until the runner is ready; then the VM is killed and its runner removed (at least 10s)."`
	Idle time.Duration `yaml:"idle" doc:"How long a surplus idle VM may wait for a job; then its runner is removed at the forge and, once the forge confirms, the VM ended (0: no scale-down; a VM not known busy is still recycled at ready + job)."`
	Job  time.Duration `yaml:"job" doc:"Longest run of a job: from the moment the VM's runner took it (busy) until the VM is ended; a VM never known busy (idle, or its job's start unreported where the forge has no busy flag) is recycled at ready + job (at least 1m)."`
}
