// Package agentproto is the contract between the host and the guest agent:
// the per-VM configuration the host places in the VM's initramfs, and the
// state reports the agent sends back to the host over the VM's network.
//
// It is the only package the host and the guest share, so it carries no
// behaviour beyond encoding, and it must stay free of host-only imports.
package agentproto

import "time"

// ConfigPath is where the agent reads its configuration inside the guest.
// The file lives only in the VM's own initramfs and is readable by root only.
const ConfigPath = "/etc/fireactions/agent.json"

// ReportPath is the HTTP path, on the host's agent listener, that takes
// reports (POST, JSON body Report, header "Authorization: Bearer <token>").
const ReportPath = "/agent/v1/report"

// Config is everything the guest agent needs to run one job.
type Config struct {
	VMID string `json:"vm_id"`
	// Template marks a warm-start template's config: the agent brings up
	// only what is identity-free (mounts, Modules), waits for its
	// Identity on IdentityPort, and continues with Identity.Config as a
	// cold boot would. A template's config carries no address, runner,
	// report token or root: every restore would share them.
	Template bool   `json:"template,omitempty"`
	Hostname string `json:"hostname"`
	// Modules are kernel module files inside the initramfs, loaded in order
	// (dependencies first). Empty for kernels with the drivers built in.
	Modules []string `json:"modules,omitempty"`
	Network Network  `json:"network"`
	Report  Reporter `json:"report"`
	Runner  Runner   `json:"runner"`
	// Root, when set, is the guest's root file system on disks: the agent
	// mounts it and switches to it before the runner starts. Nil: the
	// initramfs is the root.
	Root *Root `json:"root,omitempty"`
	// Registry is how the guest's container tools reach registries and
	// the web: the host's registry mirrors, proxy and interception CA, and
	// whether dockerd runs. Nil: none of it.
	Registry *Registry `json:"registry,omitempty"`
}

// Registry configures the guest's container tools and proxy before the
// runner starts. Values are used verbatim: nothing in them is expanded.
type Registry struct {
	// Mirrors are pull-through caches by registry host ("docker.io",
	// "ghcr.io", "host:port"), tried in order before the registry. A
	// mirror is a base URL; its path, if any, is the repository prefix
	// under which the mirror serves that registry's images
	// (http://10.200.0.1:5000/ghcr.io serves ghcr.io/org/app as
	// ghcr.io/org/app under /v2/ghcr.io/).
	Mirrors map[string][]string `json:"mirrors,omitempty"`
	// HTTPProxy, HTTPSProxy and NoProxy go into the runner's environment
	// (upper and lower case) and dockerd's.
	HTTPProxy  string `json:"http_proxy,omitempty"`
	HTTPSProxy string `json:"https_proxy,omitempty"`
	NoProxy    string `json:"no_proxy,omitempty"` // comma-separated
	// CA is the PEM certificate the proxy signs intercepted TLS with (SSL
	// bump), added to the guest's trust store; empty when the proxy
	// intercepts nothing.
	CA []byte `json:"ca,omitempty"`
	// Docker starts dockerd, when the guest has it, before the runner,
	// with its socket open to the runner's group.
	Docker bool `json:"docker,omitempty"`
	// DockerWait bounds the wait for dockerd's socket; 0: the agent's
	// default.
	DockerWait time.Duration `json:"docker_wait_ns,omitempty"`
}

// Root is an OCI image as the guest's root: the image's file system,
// shared read-only by every VM of the pool, under an overlay whose upper
// layer is the VM's own writable disk. Nothing a job writes outlives its
// VM.
type Root struct {
	// Name is the image's reference, for the guest's errors.
	Name  string `json:"name,omitempty"`
	Image Disk   `json:"image"`
	// FSType is the image's file system: "erofs" or "ext4".
	FSType string `json:"fs_type"`
	// Writable is the VM's own ext4 disk, formatted by the host.
	Writable Disk `json:"writable"`
	// Netfilter is the iptables back end of the image's Docker, "nft" or
	// "legacy" ("" when the pool runs no Docker or the image has both
	// and names neither): the host puts only its kernel modules in
	// Config.Modules.
	Netfilter string `json:"netfilter,omitempty"`
}

// Disk names a virtio block device. Serial is how the host tells them
// apart: the drive's id, which QEMU gives the guest as the disk's serial.
// A monitor that makes serials of its own (Firecracker: from the backing
// file's device and inode numbers) has its driver name each drive's on
// the kernel command line, SerialParam+<Serial>=<the monitor's serial>,
// and the agent takes either. Device is the node to use when no disk
// reports a serial, by attachment order.
type Disk struct {
	Serial string `json:"serial,omitempty"`
	Device string `json:"device,omitempty"`
}

// SerialParam starts the kernel command line parameters that name the
// serial a monitor gives a drive: fireactions.serial.<drive id>=<serial>.
// A dotted name: the kernel takes it for a module's parameter and hands
// it to no process's environment; the agent reads /proc/cmdline.
const SerialParam = "fireactions.serial."

// Network is the guest's single interface. The kernel ignores ip=, so the
// agent configures it over netlink.
type Network struct {
	Interface string   `json:"interface"` // e.g. "eth0"
	Address   string   `json:"address"`   // CIDR, e.g. "10.200.0.2/24"
	Gateway   string   `json:"gateway"`   // e.g. "10.200.0.1"
	DNS       []string `json:"dns,omitempty"`
	MTU       int      `json:"mtu,omitempty"`
}

// Reporter says where the agent reports state. The token authenticates this
// VM only; it grants nothing at the forge.
type Reporter struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// Runner is the forge's runner agent, prepared by the host's forge driver:
// the files it needs (its own single-runner credential among them), the
// command, and the unprivileged user it runs as.
type Runner struct {
	Forge   string   `json:"forge"` // "gitea", "github", "gitlab"
	User    string   `json:"user"`
	UID     int      `json:"uid"`
	GID     int      `json:"gid"`
	Home    string   `json:"home"`
	WorkDir string   `json:"work_dir"`
	Command []string `json:"command"`
	Env     []string `json:"env,omitempty"`
	Files   []File   `json:"files,omitempty"`
	// ReadyLine is a substring of the runner's output that means it is
	// registered with the forge and waiting for its job.
	ReadyLine string `json:"ready_line,omitempty"`
	// BusyLine is a substring of the runner's output that means it took
	// its job.
	BusyLine string `json:"busy_line,omitempty"`
	// JobPattern is a regular expression whose first group, on the
	// BusyLine line, is the forge's id of the job the runner took (Gitea:
	// the task id). The agent reports it with EventJobStarted, so the host
	// can fail that job should the runner die before it ends. Empty: the
	// forge's runner does not print it.
	JobPattern string `json:"job_pattern,omitempty"`
	// MinVersion, when set, is checked before the runner starts: the
	// agent runs its Command as the runner's user, and a version older
	// than Min (or none found) fails the VM with a message saying so.
	MinVersion *VersionCheck `json:"min_version,omitempty"`
}

// VersionCheck is how the agent learns the runner's version and the
// oldest one the host's plan works with.
type VersionCheck struct {
	Command []string `json:"command"` // e.g. gitlab-runner --version
	// Pattern is a regular expression whose first group, in Command's
	// output, is the version: dot-separated numbers ("17.1.0").
	Pattern string `json:"pattern"`
	Min     string `json:"min"` // e.g. "17.1"
	// Why is what needs Min, for the failure message.
	Why string `json:"why,omitempty"`
}

// File is written by the agent before the runner starts, owned by the
// runner's user. Content is base64 in JSON.
type File struct {
	Path    string `json:"path"`
	Mode    uint32 `json:"mode"`
	Content []byte `json:"content"`
	// RemoveWhenReady removes the file once the runner has printed its
	// ReadyLine: a runner that reads its credential when it starts no
	// longer needs the file, and the job, which comes later and runs as
	// the same user, finds it gone.
	RemoveWhenReady bool `json:"remove_when_ready,omitempty"`
	// IfDocker, when set, writes the file only in a guest that runs
	// dockerd (true: Registry.Docker and the image has dockerd) or only
	// in one that does not (false): a runner configuration that depends
	// on the image.
	IfDocker *bool `json:"if_docker,omitempty"`
}

// Event is a step in the guest's life, in the order they happen.
type Event string

const (
	EventBooted        Event = "booted"         // agent is running as /init
	EventNetworkUp     Event = "network-up"     // eth0 configured
	EventRunnerStarted Event = "runner-started" // runner process started
	EventRunnerReady   Event = "runner-ready"   // runner printed ReadyLine
	EventJobStarted    Event = "job-started"    // runner printed BusyLine
	EventRunnerExited  Event = "runner-exited"  // runner ended; power-off follows
	EventFailed        Event = "failed"         // the agent could not go on
)

// Report is one state report from the agent.
type Report struct {
	VMID  string `json:"vm_id"`
	Event Event  `json:"event"`
	// Uptime is the guest's CLOCK_BOOTTIME at the event: time since the
	// guest kernel started, measured inside the guest.
	Uptime   time.Duration `json:"uptime_ns"`
	ExitCode int           `json:"exit_code,omitempty"`
	Message  string        `json:"message,omitempty"`
	// Job is the forge's id of the runner's job (EventJobStarted, when
	// Runner.JobPattern found it). The host treats it as the guest's
	// word: a driver only acts on it with the runner's own credential.
	Job string `json:"job,omitempty"`
}
