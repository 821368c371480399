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
	HostID   string  `yaml:"host_id" doc:"Names this host in runner names (fa-<host_id>-<vm>); 1-20 characters of a-z, 0-9 and '-'. Default: the machine's hostname, lower-cased, other characters turned into '-', cut to 20."`
	StateDir string  `yaml:"state_dir" doc:"Absolute directory for per-VM state, logs and boot files."`
	Log      Log     `yaml:"log" doc:"The orchestrator's own logging."`
	Network  Network `yaml:"network" doc:"The host side of the VMs' network: one bridge, one TAP per VM."`
	VMM      VMM     `yaml:"vmm" doc:"The hypervisor driver."`
	Forges   []Forge `yaml:"forges" doc:"Forge connections; pools refer to them by name."`
	Pools    []Pool  `yaml:"pools" doc:"Pools of identical VMs, each serving the jobs whose labels it offers. At least one."`
}

// Log is the orchestrator's own logging.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error."`
	Format string `yaml:"format" doc:"text or json."`
}

// Network is the host side of the VMs' network: one bridge, one TAP per VM.
type Network struct {
	Bridge  string   `yaml:"bridge" doc:"Bridge the VMs' TAPs join (at most 15 bytes)."`
	CIDR    string   `yaml:"cidr" doc:"IPv4 prefix the VMs' addresses come from (prefix length at most 30)."`
	Gateway string   `yaml:"gateway" doc:"The bridge's address; must be a host address of cidr. Default: the first host address of cidr."`
	DNS     []string `yaml:"dns" doc:"DNS servers given to guests. Default: the gateway."`
	MTU     int      `yaml:"mtu" doc:"MTU of the guest interface (576-9000)."`
	NAT     *bool    `yaml:"nat" doc:"Masquerade VM egress with nftables."`
	// AgentPort is where the orchestrator listens, on the gateway address,
	// for the guest agents' state reports.
	AgentPort int `yaml:"agent_port" doc:"TCP port on the gateway address for guest agent reports."`
}

// VMM chooses and tunes the hypervisor driver.
type VMM struct {
	Driver string `yaml:"driver" doc:"qemu (or firecracker, when built in)."`
	QEMU   QEMU   `yaml:"qemu" doc:"Settings of the QEMU microvm driver."`
}

// QEMU tunes the QEMU microvm driver.
type QEMU struct {
	Binary string `yaml:"binary" doc:"The qemu-system-x86_64 binary."`
	Accel  string `yaml:"accel" doc:"auto (KVM when /dev/kvm really runs a guest, else TCG), kvm or tcg."`
}

// Forge is one connection to a forge.
type Forge struct {
	Name string `yaml:"name" doc:"Required, unique. How pools refer to this forge."`
	Type string `yaml:"type" doc:"Required: gitea, github or gitlab."`
	URL  string `yaml:"url" doc:"Required. Base http(s) URL of the forge, as the host reaches it."`
	// GuestURL is the forge's URL as guests reach it, when it differs.
	GuestURL  string `yaml:"guest_url" doc:"Base URL as guests reach it. Default: url."`
	TokenFile string `yaml:"token_file" doc:"File holding the scope-wide API token (never given to a VM); mode 600, surrounding whitespace ignored. Exactly one of token_file and token_env is required."`
	TokenEnv  string `yaml:"token_env" doc:"Environment variable holding the API token, instead of token_file."`
	CAFile    string `yaml:"ca_file" doc:"PEM bundle to trust for the forge's TLS certificate."`
	// Token is the secret read from TokenFile or TokenEnv by Load.
	Token string `yaml:"-"`
}

// Pool is a set of identical VMs serving jobs with matching labels.
type Pool struct {
	Name  string `yaml:"name" doc:"Required, unique pool name: 1-31 characters of a-z, 0-9 and '-', starting with a letter or digit."`
	Forge string `yaml:"forge" doc:"Required. Name of an entry in forges."`
	// Scope is where runners are registered: "instance", "org:NAME" or
	// "repo:OWNER/NAME".
	Scope    string        `yaml:"scope" doc:"Where runners register: instance, org:NAME or repo:OWNER/NAME."`
	Labels   []string      `yaml:"labels" doc:"Required. Labels the runners offer (no spaces, commas or duplicates); a job runs here when all its labels are offered."`
	MinIdle  int           `yaml:"min_idle" doc:"Idle VMs kept ready (0 or more)."`
	Max      int           `yaml:"max" doc:"Most VMs at once, busy or not (at least 1 and at least min_idle)."`
	VM       VMShape       `yaml:"vm" doc:"Size and boot files of the pool's VMs."`
	Runner   RunnerOptions `yaml:"runner" doc:"The forge's runner agent inside the guest."`
	Timeouts Timeouts      `yaml:"timeouts" doc:"Time limits for every stage of a VM's life."`
}

// VMShape is the size and boot files of a pool's VMs.
type VMShape struct {
	VCPUs     int    `yaml:"vcpus" doc:"Virtual CPUs per VM (1-32)."`
	MemoryMiB int    `yaml:"memory_mib" doc:"Memory per VM in MiB (at least 128)."`
	Kernel    string `yaml:"kernel" doc:"Required. Guest kernel image (bzImage for QEMU, vmlinux for Firecracker)."`
	// KernelModules are loaded by the agent, dependencies first; names are
	// resolved through modules.dep in ModulesDir.
	KernelModules []string `yaml:"kernel_modules" doc:"Guest kernel modules to load (names; dependencies are added)."`
	ModulesDir    string   `yaml:"modules_dir" doc:"Module tree for kernel_modules. Default: /lib/modules/<version from the kernel file name>."`
	// RootInitramfs is the guest's root file system as a cpio archive
	// (gzip or not): the runner agent and what jobs need. The host adds
	// its agent as /init, the modules and the VM's config on top.
	RootInitramfs string `yaml:"root_initramfs" doc:"Required. cpio archive with the guest root (runner agent, shell, tools)."`
	Cmdline       string `yaml:"cmdline" doc:"Extra kernel command line arguments."`
}

// RunnerOptions tunes the forge's runner agent inside the guest.
type RunnerOptions struct {
	Path          string        `yaml:"path" doc:"The runner agent's absolute path inside the guest. Default per forge (gitea: /bin/act_runner)."`
	User          string        `yaml:"user" doc:"Unprivileged user the runner runs as."`
	UID           int           `yaml:"uid" doc:"The runner user's UID (1-65534; never root)."`
	FetchInterval time.Duration `yaml:"fetch_interval" doc:"How often the runner asks the forge for its job (at least 100ms)."`
}

// Timeouts bound every stage of a VM's life.
type Timeouts struct {
	Boot time.Duration `yaml:"boot" doc:"VMM start until the runner is ready; then the VM is killed and its runner removed."`
	Idle time.Duration `yaml:"idle" doc:"How long a surplus idle VM may wait for a job (0: kept while within min_idle)."`
	Job  time.Duration `yaml:"job" doc:"Longest life of a VM once its runner is ready."`
}
