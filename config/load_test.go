package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A minimal file gets every default: from Defaults, from PoolDefaults,
// and derived from other fields (gateway, dns, guest_url, modules_dir,
// runner.path).
func TestParseFillsDefaults(t *testing.T) {
	f := newFixture(t)
	got := f.mustParse(minimalYAML)

	nat, jailer := true, true
	want := &Config{
		HostID:            "test-host",
		StateDir:          "/var/lib/fireactions",
		DrainGrace:        10 * time.Minute,
		ReconcileInterval: 2 * time.Second,
		Log:               Log{Level: "info", Format: "text"},
		API:               API{Socket: "/run/fireactions/api.sock"},
		Metrics:           Metrics{Listen: "127.0.0.1:9464"},
		ConsoleLogs:       ConsoleLogs{Keep: 24 * time.Hour, MaxKiB: 1024, KeepMaxMiB: 1024},
		Network: Network{
			Bridge:    "fireactions0",
			CIDR:      "10.200.0.0/24",
			Gateway:   "10.200.0.1",           // first host address of cidr
			DNS:       []string{"10.200.0.1"}, // the gateway
			MTU:       1500,
			NAT:       &nat,
			AgentPort: 8089,
		},
		VMM: VMM{Driver: "qemu", QEMU: QEMU{Binary: "qemu-system-x86_64", Accel: "auto"},
			Firecracker: Firecracker{Binary: "firecracker", JailerBinary: "jailer", Jailer: &jailer, ParentCgroup: "fireactions", MemoryOverheadMiB: 64, APICallTimeout: 5 * time.Second}},
		Forges: []Forge{{
			Name:      "gitea",
			Type:      "gitea",
			URL:       "https://gitea.example.com",
			GuestURL:  "https://gitea.example.com", // url
			Flavor:    "auto",
			TokenFile: f.path("token"),
			Token:     testToken, // trimmed
		}},
		Images: Images{Dir: "/var/lib/fireactions/images", FSType: "erofs", Refresh: 5 * time.Minute, MaxConcurrentDownloads: 3},
		Limits: limitsDefaults(),
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
				PullPolicy:    "IfNotPresent",
				DiskMiB:       8192,
			},
			Runner: RunnerOptions{
				Path:          "/bin/act_runner", // gitea's default
				User:          "runner",
				UID:           1000,
				GID:           1000, // uid
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
	f.write("fireactions-agent", "", 0o755)
	f.write("api-tokens", "# ops\n  tok-1  \n\ntok-2\n", 0o600)
	f.write("api.crt", "", 0o644)
	f.write("api.key", "", 0o600)
	f.write("hook", " hook-secret\n", 0o600)
	f.env["GITHUB_TOKEN"] = " gh-" + testToken + " "
	f.write("docker.json", "{}", 0o600)
	f.write("ghcr-token", " ghp-xyz\n", 0o600)
	got := f.mustParse(`host_id: ci-7
state_dir: /srv/fa
agent_path: $DIR/fireactions-agent
drain_grace: 30s
reconcile_interval: 200ms
log: {level: debug, format: json}
api:
  socket: /run/fa/api.sock
  listen: "[::]:8443"
  tokens_file: $DIR/api-tokens
  tls_cert_file: $DIR/api.crt
  tls_key_file: $DIR/api.key
  allow_plaintext: true
metrics: {listen: ""}
console_logs: {keep: 0s, max_kib: 2048, keep_max_mib: 300}
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
  firecracker:
    binary: /opt/fc/firecracker
    jailer_binary: /opt/fc/jailer
    jailer: false
    chroot_base_dir: /srv/jails
    uid: 900
    gid: 901
    parent_cgroup: ci/vms
    memory_overhead_mib: 0
    api_call_timeout: 20s
forges:
  - name: gitea
    type: gitea
    url: http://10.0.0.5:3000
    flavor: forgejo
    guest_url: https://git.example.org
    token_file: $DIR/token
    ca_file: $DIR/ca.pem
    webhook_secret_file: $DIR/hook
  - name: gh
    type: github
    url: https://api.github.com
    token_env: GITHUB_TOKEN
    webhook_secret_file: $DIR/hook
    poll_interval: 45s
    cancel_runs: cancel
  - name: ghe
    type: github
    url: https://ghe.example.com/api/v3
    app_id: 42
    app_private_key_file: $DIR/app.pem
    installation_id: 4242
  - name: gl
    type: gitlab
    url: https://gitlab.example.com
    token_file: $DIR/token
images:
  dir: /srv/fa-images
  max_bytes: 107374182400
  max_concurrent_downloads: 6
  fs_type: ext4
  refresh: 1m
  docker_config: $DIR/docker.json
  credentials:
    - {registry: ghcr.io, username: bot, password_file: $DIR/ghcr-token}
  mirrors:
    - {registry: docker.io, urls: ["http://10.0.0.9:5000", "https://mirror.example.com"]}
pools:
  - name: big-1
    forge: ghe
    scope: org:acme           # runner groups are org or enterprise ones
    installation_id: 4343     # the App's installation in acme, not the forge's
    repos: [acme/tools]
    labels: [self-hosted, "x86_64:host"]
    demand: webhooks
    min_idle: 0
    max: 8
    vm:
      vcpus: 32
      memory_mib: 128
      kernel: $DIR/vmlinuz-6.6.30
      kernel_modules: [overlay, vsock]
      modules_dir: $DIR/modules/6.6.30
      root_initramfs: $DIR/root.cpio
      pull_policy: Always
      disk_mib: 100
      cmdline: quiet loglevel=3
    runner:
      path: /opt/runner/run.sh
      user: _ci
      uid: 65534
      gid: 100
      fetch_interval: 100ms
      group: big
    timeouts: {boot: 90s, idle: 0s, job: 1h30m}
  - name: ent
    forge: gh                 # enterprise scope takes a classic PAT, not an App
    scope: enterprise:acme-corp
    labels: [linux]
    repos: [acme/widgets, tools/gadgets]
    vm: {kernel: $DIR/vmlinuz-6.6.30, image: "registry.example.com/ci/runner:v2"}
  - name: gl-group
    forge: gl
    scope: group:acme/tools
    labels: [linux]
    vm: {kernel: $DIR/vmlinuz-6.6.30, root_initramfs: $DIR/root.cpio}
    runner:
      run_untagged: true
      locked: false
      access_level: ref_protected
      maximum_timeout: 10m
      executor: docker
      default_image: ruby:3.3
`)

	nat, unlocked, jailer := false, false, false
	poolDefaults := PoolDefaults()
	want := &Config{
		HostID:            "ci-7",
		StateDir:          "/srv/fa",
		AgentPath:         f.path("fireactions-agent"),
		DrainGrace:        30 * time.Second,
		ReconcileInterval: 200 * time.Millisecond,
		Log:               Log{Level: "debug", Format: "json"},
		API: API{
			Socket: "/run/fa/api.sock", Listen: "[::]:8443", TokensFile: f.path("api-tokens"),
			TLSCertFile: f.path("api.crt"), TLSKeyFile: f.path("api.key"), AllowPlaintext: true, Tokens: []string{"tok-1", "tok-2"},
		},
		Metrics:     Metrics{Listen: ""},
		ConsoleLogs: ConsoleLogs{Keep: 0, MaxKiB: 2048, KeepMaxMiB: 300},
		Network: Network{
			Bridge: "br-ci", CIDR: "192.168.50.0/24", Gateway: "192.168.50.254",
			DNS: []string{"1.1.1.1", "2606:4700:4700::1111"}, MTU: 9000, NAT: &nat, AgentPort: 9000,
		},
		VMM: VMM{Driver: "firecracker", QEMU: QEMU{Binary: "/run/current-system/sw/bin/qemu-kvm", Accel: "tcg"},
			Firecracker: Firecracker{Binary: "/opt/fc/firecracker", JailerBinary: "/opt/fc/jailer", Jailer: &jailer, ChrootBaseDir: "/srv/jails",
				UID: 900, GID: 901, ParentCgroup: "ci/vms", MemoryOverheadMiB: 0, APICallTimeout: 20 * time.Second}},
		Forges: []Forge{
			{
				Name: "gitea", Type: "gitea", URL: "http://10.0.0.5:3000", GuestURL: "https://git.example.org",
				TokenFile: f.path("token"), CAFile: f.path("ca.pem"), Token: testToken, Flavor: "forgejo",
				WebhookSecretFile: f.path("hook"), WebhookSecret: "hook-secret",
			},
			{
				Name: "gh", Type: "github", URL: "https://api.github.com", GuestURL: "https://api.github.com",
				TokenEnv: "GITHUB_TOKEN", Token: "gh-" + testToken, PollInterval: 45 * time.Second, CancelRuns: "cancel",
				WebhookSecretFile: f.path("hook"), WebhookSecret: "hook-secret",
			},
			{
				Name: "ghe", Type: "github", URL: "https://ghe.example.com/api/v3", GuestURL: "https://ghe.example.com/api/v3",
				AppID: 42, AppPrivateKeyFile: f.path("app.pem"), InstallationID: 4242, AppPrivateKey: testKeyPEM(),
				PollInterval: 30 * time.Second, // derived: no webhooks
				CancelRuns:   "force",          // the default
			},
			{
				Name: "gl", Type: "gitlab", URL: "https://gitlab.example.com", GuestURL: "https://gitlab.example.com",
				TokenFile: f.path("token"), Token: testToken,
			},
		},
		Images: Images{
			Dir: "/srv/fa-images", MaxBytes: 107374182400, MaxConcurrentDownloads: 6, FSType: "ext4", Refresh: time.Minute,
			DockerConfig: f.path("docker.json"),
			Credentials: []RegistryCredential{{
				Registry: "ghcr.io", Username: "bot", PasswordFile: f.path("ghcr-token"), Password: "ghp-xyz",
			}},
			Mirrors: []RegistryMirror{{Registry: "docker.io", URLs: []string{"http://10.0.0.9:5000", "https://mirror.example.com"}}},
		},
		Limits: limitsDefaults(),
		Pools: []Pool{{
			Name: "big-1", Forge: "ghe", Scope: "org:acme", InstallationID: 4343, Repos: []string{"acme/tools"},
			Labels: []string{"self-hosted", "x86_64:host"}, Demand: "webhooks", MinIdle: 0, Max: 8,
			VM: VMShape{
				VCPUs: 32, MemoryMiB: 128, Kernel: f.path("vmlinuz-6.6.30"),
				KernelModules: []string{"overlay", "vsock"}, ModulesDir: f.path("modules/6.6.30"),
				RootInitramfs: f.path("root.cpio"), Cmdline: "quiet loglevel=3", PullPolicy: "Always", DiskMiB: 100,
			},
			Runner: RunnerOptions{
				Path: "/opt/runner/run.sh", User: "_ci", UID: 65534, GID: 100, FetchInterval: 100 * time.Millisecond,
				Group: "big",
			},
			Timeouts: Timeouts{Boot: 90 * time.Second, Idle: 0, Job: 90 * time.Minute},
		}, {
			// self-hosted is added: every GitHub runner offers it.
			Name: "ent", Forge: "gh", Scope: "enterprise:acme-corp", Labels: []string{"linux", "self-hosted"},
			Repos: []string{"acme/widgets", "tools/gadgets"}, Demand: "scaleset", MinIdle: 0, Max: 1, // the default at enterprise scope
			VM: VMShape{
				VCPUs: 1, MemoryMiB: 512, Kernel: f.path("vmlinuz-6.6.30"), ModulesDir: "/lib/modules/6.6.30",
				Image: "registry.example.com/ci/runner:v2", PullPolicy: "IfNotPresent", DiskMiB: 8192,
			},
			Runner: RunnerOptions{
				Path: "/home/runner/run.sh", User: "runner", UID: 1000, GID: 1000, FetchInterval: time.Second,
			},
			Timeouts: poolDefaults.Timeouts,
		}, {
			Name: "gl-group", Forge: "gl", Scope: "group:acme/tools", Labels: []string{"linux"}, MinIdle: 0, Max: 1,
			VM: VMShape{
				VCPUs: 1, MemoryMiB: 512, Kernel: f.path("vmlinuz-6.6.30"), ModulesDir: "/lib/modules/6.6.30",
				RootInitramfs: f.path("root.cpio"), PullPolicy: "IfNotPresent", DiskMiB: 8192,
			},
			Runner: RunnerOptions{
				Path: "/usr/bin/gitlab-runner", User: "runner", UID: 1000, GID: 1000, FetchInterval: time.Second,
				RunUntagged: true, Locked: &unlocked, AccessLevel: "ref_protected", MaximumTimeout: 10 * time.Minute,
				Executor: "docker", DefaultImage: "ruby:3.3",
			},
			Timeouts: poolDefaults.Timeouts,
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
		{"gid defaults to uid", "max: 2", "max: 2\n    runner: {uid: 1234}", "",
			func(c *Config) any { return c.Pools[0].Runner.GID }, 1234},
		{"gid 0 is uid", "max: 2", "max: 2\n    runner: {uid: 1234, gid: 0}", "",
			func(c *Config) any { return c.Pools[0].Runner.GID }, 1234},
		{"explicit gid is kept", "max: 2", "max: 2\n    runner: {gid: 100}", "",
			func(c *Config) any { return c.Pools[0].Runner.GID }, 100},
		{"a gitea pool gets no gitlab runner defaults", "", "", "",
			func(c *Config) any {
				r := c.Pools[0].Runner
				return []any{r.Locked, r.AccessLevel, r.Executor, r.Group}
			}, []any{(*bool)(nil), "", "", ""}},
		{"a gitlab forge with a webhook secret", "type: gitea", "type: gitlab\n    webhook_secret_file: $DIR/token", "",
			func(c *Config) any { return c.Forges[0].WebhookSecret }, testToken},
		{"api tokens are read without listen", "host_id:", "api: {tokens_file: $DIR/token}\nhost_id:", "",
			func(c *Config) any { return c.API.Tokens }, []string{testToken}},
		{"metrics on all addresses", "host_id:", "metrics: {listen: \":9464\"}\nhost_id:", "",
			func(c *Config) any { return c.Metrics.Listen }, ":9464"},
		{"metrics on a host name", "host_id:", "metrics: {listen: \"localhost:9464\"}\nhost_id:", "",
			func(c *Config) any { return c.Metrics.Listen }, "localhost:9464"},
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

// A GitHub App forge and its org pool get GitHub's defaults: the API URL,
// the actions-runner image's runner path, no GitLab options.
func TestGitHubAppPool(t *testing.T) {
	f := newFixture(t)
	c := f.mustParse(githubYAML)
	wantForge := Forge{
		Name: "gh", Type: "github",
		URL: "https://api.github.com", GuestURL: "https://api.github.com", // GitHub.com
		AppID: 12345, AppPrivateKeyFile: f.path("app.pem"), AppPrivateKey: testKeyPEM(),
		PollInterval: 30 * time.Second, // without webhooks
		CancelRuns:   "force",
	}
	if !reflect.DeepEqual(c.Forges[0], wantForge) {
		t.Errorf("forge:\n got %+v\nwant %+v", c.Forges[0], wantForge)
	}
	p := c.Pools[0]
	wantRunner := RunnerOptions{Path: "/home/runner/run.sh", User: "runner", UID: 1000, GID: 1000, FetchInterval: time.Second}
	if !reflect.DeepEqual(p.Runner, wantRunner) {
		t.Errorf("runner:\n got %+v\nwant %+v", p.Runner, wantRunner)
	}
	if s, err := ParseScope(p.Scope); err != nil || s != (Scope{Kind: ScopeOrg, Org: "acme"}) {
		t.Errorf("scope %q parses as %+v, %v", p.Scope, s, err)
	}
	if !reflect.DeepEqual(p.Repos, []string{"acme/widgets"}) {
		t.Errorf("repos = %q, want acme/widgets", p.Repos)
	}

	// A personal access token instead, on GitHub Enterprise Server.
	text := replace(t, githubYAML, "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n",
		"    url: https://ghe.example.com/api/v3\n    token_file: $DIR/token\n")
	fo := f.mustParse(text).Forges[0]
	if fo.URL != "https://ghe.example.com/api/v3" || fo.Token != testToken || fo.AppPrivateKey != nil {
		t.Errorf("PAT forge = %+v", fo)
	}

	// A PKCS #8 key does as well as GitHub's PKCS #1.
	block, _ := pem.Decode(testKeyPEM())
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	f.write("app.pem", string(pkcs8), 0o600)
	if got := f.mustParse(githubYAML).Forges[0].AppPrivateKey; !bytes.Equal(got, pkcs8) {
		t.Errorf("AppPrivateKey is not the PKCS #8 file")
	}
}

// A GitLab project pool gets GitLab's runner defaults and nothing of
// GitHub's.
func TestGitLabProjectPool(t *testing.T) {
	f := newFixture(t)
	c := f.mustParse(gitlabYAML)
	if fo := c.Forges[0]; fo.Token != testToken || fo.GuestURL != "https://gitlab.example.com" {
		t.Errorf("forge = %+v", fo)
	}
	p := c.Pools[0]
	locked := true
	wantRunner := RunnerOptions{
		Path: "/usr/bin/gitlab-runner", User: "runner", UID: 1000, GID: 1000, FetchInterval: time.Second,
		RunUntagged: false, Locked: &locked, AccessLevel: "not_protected", MaximumTimeout: 0, Executor: "auto",
		DefaultImage: "alpine:latest",
	}
	if !reflect.DeepEqual(p.Runner, wantRunner) {
		t.Errorf("runner:\n got %+v\nwant %+v", p.Runner, wantRunner)
	}
	if s, err := ParseScope(p.Scope); err != nil || s != (Scope{Kind: ScopeProject, Project: "acme/tools/widgets"}) {
		t.Errorf("scope %q parses as %+v, %v", p.Scope, s, err)
	}

	// The instance and group scopes work too; so does an explicit runner.
	for _, scope := range []string{"instance", "group:acme", "group:acme/tools"} {
		text := replace(t, gitlabYAML, "scope: project:acme/tools/widgets", "scope: "+scope)
		text = replace(t, text, "max: 2", "max: 2\n    runner: {run_untagged: true, maximum_timeout: 2h, path: /opt/gitlab-runner}")
		r := f.mustParse(text).Pools[0].Runner
		if !r.RunUntagged || r.MaximumTimeout != 2*time.Hour || r.Path != "/opt/gitlab-runner" || r.Executor != "auto" {
			t.Errorf("scope %s: runner = %+v", scope, r)
		}
	}
}

// Without host_id, the machine's hostname, sanitised, names the host;
// a hostname that gives no usable id makes host_id required.
func TestHostIDDefaultsToHostname(t *testing.T) {
	h, _ := os.Hostname()
	f := newFixture(t)
	yaml := replace(t, minimalYAML, "host_id: test-host\n", "")
	if sanitizeHostID(h) == "" {
		if _, err := f.parse(yaml); err == nil || !strings.Contains(err.Error(), "host_id") {
			t.Fatalf("unusable hostname %q: err = %v, want one naming host_id", h, err)
		}
		return
	}
	c := f.mustParse(yaml)
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

// flavor is auto unless the file says gitea or forgejo; forgejo makes
// forgejo-runner the default runner path; another word or another forge
// type is refused, naming the field.
func TestGiteaFlavor(t *testing.T) {
	f := newFixture(t)
	c := f.mustParse(minimalYAML)
	if got := c.Forges[0].Flavor; got != "auto" {
		t.Errorf("left out: %q, want auto", got)
	}
	if got := c.Pools[0].Runner.Path; got != "/bin/act_runner" {
		t.Errorf("auto: runner.path %q, want /bin/act_runner", got)
	}
	withFlavor := func(word string) string {
		return replace(t, minimalYAML, "    token_file: $DIR/token\n", "    token_file: $DIR/token\n    flavor: "+word+"\n")
	}
	for word, path := range map[string]string{"gitea": "/bin/act_runner", "forgejo": "/bin/forgejo-runner", "auto": "/bin/act_runner"} {
		c := f.mustParse(withFlavor(word))
		if got := c.Forges[0].Flavor; got != word {
			t.Errorf("flavor: %s read as %q", word, got)
		}
		if got := c.Pools[0].Runner.Path; got != path {
			t.Errorf("flavor %s: runner.path %q, want %s", word, got, path)
		}
	}
	for _, tc := range []struct{ name, text, want string }{
		{"unknown word", withFlavor("gogs"), `forges[0] ("gitea").flavor: "gogs" is not one of gitea, forgejo, auto`},
		{"not gitea", replace(t, gitlabYAML, "    token_file: $DIR/token\n", "    token_file: $DIR/token\n    flavor: forgejo\n"),
			`forges[0] ("gl").flavor: is only for gitea forges, not gitlab`},
	} {
		_, err := f.parse(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

const fleetYAML = `fleet:
  urls: [nats://10.0.0.1:4222, tls://nats.example.com:4222]
  credentials_file: $DIR/nats.creds
`

// No fleet section: no fleet. A fleet section gets claim_ttl 30s and
// on_unreachable fail unless it says otherwise.
func TestFleetSection(t *testing.T) {
	f := newFixture(t)
	f.write("nats.creds", "creds", 0o600)
	if c := f.mustParse(minimalYAML); c.Fleet != nil {
		t.Fatalf("fleet without a section: %+v", c.Fleet)
	}
	c := f.mustParse(replace(t, minimalYAML, "host_id:", fleetYAML+"host_id:"))
	want := Fleet{URLs: []string{"nats://10.0.0.1:4222", "tls://nats.example.com:4222"}, CredsFile: f.path("nats.creds"), ClaimTTL: 30 * time.Second, Replicas: 1, OnUnreachable: "fail"}
	if c.Fleet == nil || !reflect.DeepEqual(*c.Fleet, want) {
		t.Fatalf("fleet %+v, want %+v", c.Fleet, want)
	}
	c = f.mustParse(replace(t, minimalYAML, "host_id:", fleetYAML+"  claim_ttl: 5s\n  replicas: 3\n  on_unreachable: local\nhost_id:"))
	if c.Fleet.ClaimTTL != 5*time.Second || c.Fleet.Replicas != 3 || c.Fleet.OnUnreachable != "local" {
		t.Fatalf("explicit values not kept: %+v", c.Fleet)
	}
	// A token file instead of credentials; or, explicitly, no authentication.
	f.write("nats.token", "token", 0o600)
	c = f.mustParse(replace(t, minimalYAML, "host_id:", replace(t, fleetYAML, "credentials_file: $DIR/nats.creds", "token_file: $DIR/nats.token")+"host_id:"))
	if c.Fleet.TokenFile != f.path("nats.token") || c.Fleet.CredsFile != "" {
		t.Fatalf("token_file: %+v", c.Fleet)
	}
	c = f.mustParse(replace(t, minimalYAML, "host_id:", replace(t, fleetYAML, "credentials_file: $DIR/nats.creds", "insecure_no_auth: true")+"host_id:"))
	if !c.Fleet.InsecureNoAuth {
		t.Fatalf("insecure_no_auth: %+v", c.Fleet)
	}
}

// Each case is one mistake in fleet; the problem names its field and
// never shows a password.
func TestFleetMistakes(t *testing.T) {
	tests := []struct{ name, old, new, field, want string }{
		{"no URLs", "  urls: [nats://10.0.0.1:4222, tls://nats.example.com:4222]\n", "", "fleet.urls", "at least one"},
		{"http URL", "nats://10.0.0.1:4222", "http://10.0.0.1:4222", "fleet.urls[0]", "not nats or tls"},
		{"password in URL", "nats://10.0.0.1:4222", "nats://u:pa$$word@10.0.0.1:4222", "fleet.urls[0]", "credentials_file"},
		{"no port", "tls://nats.example.com:4222", "tls://nats.example.com", "fleet.urls[1]", "no port"},
		{"creds readable by others", "$DIR/nats.creds", "$DIR/open.creds", "fleet.credentials_file", "chmod 600"},
		{"creds missing", "$DIR/nats.creds", "$DIR/nope.creds", "fleet.credentials_file", "no such file"},
		{"TTL too long", "  credentials_file", "  claim_ttl: 1m\n  credentials_file", "fleet.claim_ttl", "more than 30s"},
		{"TTL too short", "  credentials_file", "  claim_ttl: 100ms\n  credentials_file", "fleet.claim_ttl", "less than 1s"},
		{"replicas too many", "  credentials_file", "  replicas: 6\n  credentials_file", "fleet.replicas", "6"},
		{"replicas negative", "  credentials_file", "  replicas: -1\n  credentials_file", "fleet.replicas", "-1"},
		{"on_unreachable", "  credentials_file", "  on_unreachable: retry\n  credentials_file", "fleet.on_unreachable", "retry"},
		{"no authentication", "  credentials_file: $DIR/nats.creds\n", "", "fleet", "fleet.credentials_file or fleet.token_file"},
		{"insecure_no_auth false", "  credentials_file: $DIR/nats.creds\n", "  insecure_no_auth: false\n", "fleet", "fleet.credentials_file or fleet.token_file"},
		{"token readable by others", "  credentials_file: $DIR/nats.creds\n", "  token_file: $DIR/open.creds\n", "fleet.token_file", "chmod 600"},
		{"token missing", "  credentials_file: $DIR/nats.creds\n", "  token_file: $DIR/nope.token\n", "fleet.token_file", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.write("nats.creds", "creds", 0o600)
			f.write("open.creds", "creds", 0o644)
			text := replace(t, replace(t, minimalYAML, "host_id:", fleetYAML+"host_id:"), tt.old, tt.new)
			f.wantFieldError(text, tt.field, tt.want, "pa$$word")
		})
	}
}

// warm_start is off unless set, on when set with QEMU or Firecracker
// (both save and restore: catalog.WarmVMMs, held to the drivers by the
// daemon's TestWarmVMMsAreTheDriversThatSave) for an initramfs pool, on
// with QEMU for an image pool, and refused, naming the field, for an
// image pool with Firecracker (its restores of drives are not built).
func TestWarmStart(t *testing.T) {
	f := newFixture(t)
	if c := f.mustParse(minimalYAML); c.Pools[0].WarmStart {
		t.Error("warm_start is on by default")
	}
	on := replace(t, minimalYAML, "max: 2", "max: 2\n    warm_start: true")
	if c := f.mustParse(on); !c.Pools[0].WarmStart {
		t.Error("warm_start: true not kept")
	}
	fc := "vmm:\n  driver: firecracker\n  firecracker: {uid: 64000, gid: 64000}\n"
	if c := f.mustParse(on + fc); !c.Pools[0].WarmStart || c.VMM.Driver != "firecracker" {
		t.Error("warm_start with firecracker not kept")
	}
	image := replace(t, on, "      root_initramfs: $DIR/root.cpio\n", "      image: ghcr.io/acme/runner:v1\n")
	if c := f.mustParse(image); !c.Pools[0].WarmStart || c.Pools[0].VM.Image == "" {
		t.Error("warm_start: true of an image pool not kept")
	}
	f.wantFieldError(image+fc, `pools[0] ("default").warm_start`, `not with vm.image under vmm.driver "firecracker"`, "NOSECRET")
	f.wantFieldError(replace(t, minimalYAML, "max: 2", "max: 2\n    warm_start: yes please"), "pools[0].warm_start", "boolean", "NOSECRET")
}
