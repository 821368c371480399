package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// A minimal file gets every default: from Defaults, from PoolDefaults,
// and derived from other fields (gateway, dns, guest_url, modules_dir,
// runner.path).
func TestParseFillsDefaults(t *testing.T) {
	f := newFixture(t)
	got := f.mustParse(minimalYAML)

	nat := true
	want := &Config{
		HostID:   "test-host",
		StateDir: "/var/lib/fireactions",
		Log:      Log{Level: "info", Format: "text"},
		Network: Network{
			Bridge:    "fireactions0",
			CIDR:      "10.200.0.0/24",
			Gateway:   "10.200.0.1",           // first host address of cidr
			DNS:       []string{"10.200.0.1"}, // the gateway
			MTU:       1500,
			NAT:       &nat,
			AgentPort: 8089,
		},
		VMM: VMM{Driver: "qemu", QEMU: QEMU{Binary: "qemu-system-x86_64", Accel: "auto"}},
		Forges: []Forge{{
			Name:      "gitea",
			Type:      "gitea",
			URL:       "https://gitea.example.com",
			GuestURL:  "https://gitea.example.com", // url
			TokenFile: f.path("token"),
			Token:     testToken, // trimmed
		}},
		Pools: []Pool{{
			Name:    "default",
			Forge:   "gitea",
			Scope:   "instance",
			Labels:  []string{"linux"},
			MinIdle: 1,
			Max:     2,
			VM: VMShape{
				VCPUs:         1,
				MemoryMiB:     512,
				Kernel:        f.path("vmlinuz-6.6.30"),
				ModulesDir:    "/lib/modules/6.6.30", // from the kernel's name
				RootInitramfs: f.path("root.cpio"),
			},
			Runner: RunnerOptions{
				Path:          "/bin/act_runner", // gitea's default
				User:          "runner",
				UID:           1000,
				FetchInterval: time.Second,
			},
			Timeouts: Timeouts{Boot: 2 * time.Minute, Idle: 10 * time.Minute, Job: 3 * time.Hour},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(minimal):\n got %+v\nwant %+v", got, want)
	}
}

// A file that sets every key gets exactly what it says, explicit zero
// values (nat: false, min_idle: 0, idle: 0) included.
func TestParseKeepsEveryExplicitValue(t *testing.T) {
	f := newFixture(t)
	f.write("ca.pem", "", 0o644)
	f.env["GITHUB_TOKEN"] = " gh-" + testToken + " "
	got := f.mustParse(`host_id: ci-7
state_dir: /srv/fa
log: {level: debug, format: json}
network:
  bridge: br-ci
  cidr: 192.168.50.0/24
  gateway: 192.168.50.254
  dns: [1.1.1.1, 2606:4700:4700::1111]
  mtu: 9000
  nat: false
  agent_port: 9000
vmm:
  driver: firecracker
  qemu: {binary: /run/current-system/sw/bin/qemu-kvm, accel: tcg}
forges:
  - name: gitea
    type: gitea
    url: http://10.0.0.5:3000
    guest_url: https://git.example.org
    token_file: $DIR/token
    ca_file: $DIR/ca.pem
  - name: gh
    type: github
    url: https://api.github.com
    token_env: GITHUB_TOKEN
pools:
  - name: big-1
    forge: gh
    scope: repo:acme/widgets
    labels: [self-hosted, "x86_64:host"]
    min_idle: 0
    max: 8
    vm:
      vcpus: 32
      memory_mib: 128
      kernel: $DIR/vmlinuz-6.6.30
      kernel_modules: [overlay, vsock]
      modules_dir: $DIR/modules/6.6.30
      root_initramfs: $DIR/root.cpio
      cmdline: quiet loglevel=3
    runner:
      path: /opt/runner/run.sh
      user: _ci
      uid: 65534
      fetch_interval: 100ms
    timeouts: {boot: 90s, idle: 0s, job: 1h30m}
`)

	nat := false
	want := &Config{
		HostID:   "ci-7",
		StateDir: "/srv/fa",
		Log:      Log{Level: "debug", Format: "json"},
		Network: Network{
			Bridge: "br-ci", CIDR: "192.168.50.0/24", Gateway: "192.168.50.254",
			DNS: []string{"1.1.1.1", "2606:4700:4700::1111"}, MTU: 9000, NAT: &nat, AgentPort: 9000,
		},
		VMM: VMM{Driver: "firecracker", QEMU: QEMU{Binary: "/run/current-system/sw/bin/qemu-kvm", Accel: "tcg"}},
		Forges: []Forge{
			{
				Name: "gitea", Type: "gitea", URL: "http://10.0.0.5:3000", GuestURL: "https://git.example.org",
				TokenFile: f.path("token"), CAFile: f.path("ca.pem"), Token: testToken,
			},
			{
				Name: "gh", Type: "github", URL: "https://api.github.com", GuestURL: "https://api.github.com",
				TokenEnv: "GITHUB_TOKEN", Token: "gh-" + testToken,
			},
		},
		Pools: []Pool{{
			Name: "big-1", Forge: "gh", Scope: "repo:acme/widgets",
			Labels: []string{"self-hosted", "x86_64:host"}, MinIdle: 0, Max: 8,
			VM: VMShape{
				VCPUs: 32, MemoryMiB: 128, Kernel: f.path("vmlinuz-6.6.30"),
				KernelModules: []string{"overlay", "vsock"}, ModulesDir: f.path("modules/6.6.30"),
				RootInitramfs: f.path("root.cpio"), Cmdline: "quiet loglevel=3",
			},
			Runner:   RunnerOptions{Path: "/opt/runner/run.sh", User: "_ci", UID: 65534, FetchInterval: 100 * time.Millisecond},
			Timeouts: Timeouts{Boot: 90 * time.Second, Idle: 0, Job: 90 * time.Minute},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(full):\n got %+v\nwant %+v", got, want)
	}
}

// Each case edits the minimal file and looks at one resulting value.
func TestParseValues(t *testing.T) {
	tests := []struct {
		name     string
		old, new string
		touch    string // a file to create in the fixture directory
		get      func(*Config) any
		want     any
	}{
		{"gateway is the first host of cidr", "host_id:", "network: {cidr: 172.16.8.0/21}\nhost_id:", "",
			func(c *Config) any { return c.Network.Gateway }, "172.16.8.1"},
		{"dns defaults to the gateway", "host_id:", "network: {cidr: 172.16.8.0/21}\nhost_id:", "",
			func(c *Config) any { return c.Network.DNS }, []string{"172.16.8.1"}},
		{"dns defaults to an explicit gateway", "host_id:", "network: {gateway: 10.200.0.99}\nhost_id:", "",
			func(c *Config) any { return c.Network.DNS }, []string{"10.200.0.99"}},
		{"explicit dns is kept", "host_id:", "network: {dns: [9.9.9.9]}\nhost_id:", "",
			func(c *Config) any { return c.Network.DNS }, []string{"9.9.9.9"}},
		{"modules_dir from vmlinux-VERSION", "$DIR/vmlinuz-6.6.30", "$DIR/vmlinux-6.1.0-rc1", "vmlinux-6.1.0-rc1",
			func(c *Config) any { return c.Pools[0].VM.ModulesDir }, "/lib/modules/6.1.0-rc1"},
		{"no modules_dir from another kernel name", "$DIR/vmlinuz-6.6.30", "$DIR/root.cpio", "",
			func(c *Config) any { return c.Pools[0].VM.ModulesDir }, ""},
		{"explicit nat: false is kept", "host_id:", "network: {nat: false}\nhost_id:", "",
			func(c *Config) any { return *c.Network.NAT }, false},
		{"explicit idle: 0 is kept", "max: 2", "max: 2\n    timeouts: {idle: 0s}", "",
			func(c *Config) any { return c.Pools[0].Timeouts.Idle }, time.Duration(0)},
		{"a pool's unset keys keep PoolDefaults", "max: 2", "max: 2\n    timeouts: {job: 20m}", "",
			func(c *Config) any { return c.Pools[0].Timeouts }, Timeouts{Boot: 2 * time.Minute, Idle: 10 * time.Minute, Job: 20 * time.Minute}},
		{"null keeps the default", "host_id:", "state_dir: ~\nlog:\nhost_id:", "",
			func(c *Config) any { return []string{c.StateDir, c.Log.Level} }, []string{"/var/lib/fireactions", "info"}},
		{"org scope", "max: 2", "max: 2\n    scope: org:acme", "",
			func(c *Config) any { return c.Pools[0].Scope }, "org:acme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.touch != "" {
				f.write(tt.touch, "", 0o644)
			}
			c := f.mustParse(replace(t, minimalYAML, tt.old, tt.new))
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// Without host_id, the machine's hostname, sanitised, names the host.
func TestHostIDDefaultsToHostname(t *testing.T) {
	h, err := os.Hostname()
	if err != nil || sanitizeHostID(h) == "" {
		t.Skipf("no usable hostname (%q, %v)", h, err)
	}
	f := newFixture(t)
	c := f.mustParse(replace(t, minimalYAML, "host_id: test-host\n", ""))
	if want := sanitizeHostID(h); c.HostID != want {
		t.Errorf("HostID = %q, want %q", c.HostID, want)
	}
}

func TestSanitizeHostID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ci-host", "ci-host"},
		{"CI_Host.example.com", "ci-host-example-com"},
		{"--weird--", "weird"},
		{"a-very-long-hostname-indeed", "a-very-long-hostname"},
		{"twenty-characters-x-y", "twenty-characters-x"}, // no trailing '-' after the cut
		{"höst", "h-st"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := sanitizeHostID(tt.in); got != tt.want {
			t.Errorf("sanitizeHostID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoadReadsTheFile(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(f.dir, "fireactions.yaml")
	if err := os.WriteFile(path, []byte(f.expand(minimalYAML)), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Pools[0].Name != "default" || c.Forges[0].Token != testToken {
		t.Errorf("Load gave %+v", c)
	}
	missing := filepath.Join(f.dir, "missing.yaml")
	_, err = Load(missing)
	if want := missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load(missing file) = %v, want %q", err, want)
	}
}
