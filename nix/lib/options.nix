# The options of the five NixOS modules, as data (see spec.nix). The
# modules declare exactly these; docs/nixos.md is generated from them.
{ faces, sizes, spec }:
let
  inherit (spec) option;
  sizeNames = builtins.attrNames sizes;
in
{
  microvm-base = {
    enable = option {
      type = "bool";
      default = false;
      description = "The host side every orchestrator needs: KVM, the guest kernel, the bridges' registry, DNS for guests, sysctls. The orchestrator modules turn it on.";
    };
    stateDir = option {
      type = "path";
      default = "/var/lib/microvm-base";
      description = "Shared state: the selected guest kernel is linked here as kernel (and its modules as modules).";
    };
    bridges = option {
      type.attrsOf.submodule = {
        cidr = option { type = "str"; description = "The guests' IPv4 prefix on this bridge; the gateway (the host) is its first address."; };
        owner = option { type = "str"; description = "The orchestrator (face) that creates the bridge and its TAPs."; };
        tcpPorts = option { type.listOf = "port"; default = [ ]; description = "Host TCP ports the owner serves its guests on this bridge (its agent port); opened in the host firewall on this interface only."; };
      };
      default = { };
      description = "The registry of VM bridges, by interface name. Each orchestrator module registers its own; prefixes must not overlap and names must be unique. The orchestrator creates the bridge itself at start; this module serves DNS on it and keeps other network managers away from it.";
    };
    guestPorts = {
      tcp = option {
        type.listOf = "port";
        default = [ ];
        description = "Host TCP ports guests may reach on their gateway besides the orchestrator's agent port (for example the registry cache); added to every orchestrator's network.allow_tcp_ports.";
      };
      udp = option {
        type.listOf = "port";
        default = [ ];
        description = "Host UDP ports guests may reach on their gateway; DNS (53) is added by the orchestrator when guests use the gateway as resolver.";
      };
    };
    cache = option {
      type.nullOr = "json";
      default = null;
      description = "Set by services.registry-cache: its endpoints (Zot's port and registries, the proxy's port, the interception CA's certificate), which every orchestrator turns into the registry_cache section of its configuration on its own bridge's gateway. null: no cache.";
    };
    kernel = {
      package = option {
        type = "package";
        defaultText = "the guest kernel of nix/packages/guest-kernel.nix (Linux from nixpkgs' sources, virtio, block, net, overlay and erofs built in, no modules)";
        description = "The guest kernel derivation: bzImage (QEMU) and vmlinux (Firecracker) at its root, lib/modules/<modDirVersion> its module tree when it has one.";
      };
      image = option {
        type = "path";
        readOnly = true;
        defaultText = "kernel.package + \"/bzImage\"";
        description = "The compressed guest kernel the QEMU driver boots; pools use it unless they name another.";
      };
      vmlinux = option {
        type = "path";
        readOnly = true;
        defaultText = "kernel.package + \"/vmlinux\"";
        description = "The uncompressed guest kernel the Firecracker driver boots.";
      };
      modulesDir = option {
        type.nullOr = "path";
        readOnly = true;
        defaultText = "kernel.package/lib/modules/<modDirVersion>, or null";
        description = "The guest kernel's module tree, for pools that load kernel_modules (null for the default kernel, which has none).";
      };
    };
    qemu.package = option {
      type = "package";
      defaultText = "pkgs.qemu_kvm";
      description = "The QEMU whose qemu-system-<arch> (the host's architecture) the orchestrators run (vmm.qemu.binary).";
    };
    dns = {
      enable = option {
        type = "bool";
        default = true;
        description = "Serve DNS to guests on every registered bridge's gateway (dnsmasq, bound to the bridges only, no DHCP); the orchestrators' default network.dns is the gateway.";
      };
      upstreams = option {
        type.listOf = "str";
        default = [ ];
        description = "Resolvers the guests' DNS forwards to; empty: the host's own (/etc/resolv.conf).";
      };
    };
    monitoring = {
      prometheus = option {
        type = "bool";
        default = true;
        description = "When the host runs Prometheus (services.prometheus.enable) and an orchestrator serves metrics: load the alert rules (deploy/monitoring/alerts.yml, runbooks in docs/alerts.md) into services.prometheus.ruleFiles and scrape every enabled orchestrator's metricsListen as job fireactions, the job the rules watch.";
      };
      grafana = option {
        type = "bool";
        default = true;
        description = "When the host runs Grafana (services.grafana.enable): provision the fireactions dashboard (deploy/monitoring/dashboards) through services.grafana.provision; it asks for a Prometheus data source.";
      };
    };
    kvm = {
      enable = option {
        type = "bool";
        default = true;
        description = "Load tun, vhost_net and bridge at boot, and the KVM module of kvm.cpuVendor (so the hardened services need not load modules).";
      };
      cpuVendor = option {
        type.nullOr.enum = [ "intel" "amd" ];
        default = null;
        description = "Which KVM module to load: kvm-intel or kvm-amd (loading both always fails one, and the system shows degraded). null: the one hardware-configuration.nix loads (nixos-generate-config writes it), or none on aarch64, where KVM is built in.";
      };
      nested = option {
        type = "bool";
        default = false;
        description = "Allow nested virtualisation (a guest running KVM itself): sets nested=1 on the module kvm.cpuVendor names, so it needs kvm.cpuVendor.";
      };
    };
    security = {
      hardenSysctls = option {
        type = "bool";
        default = true;
        description = "Kernel sysctls for a host that runs untrusted code in guests: kptr_restrict, dmesg_restrict, no unprivileged BPF, BPF JIT hardening, ptrace scope, no ICMP redirects, reverse-path filtering; IPv4 forwarding on.";
      };
      blockPrivateNetworks = option {
        type = "bool";
        default = false;
        description = "Guests may not reach RFC 1918 and 100.64/10 addresses (network.block_private of every orchestrator); link-local (cloud metadata) is always blocked.";
      };
      newConnectionsPerSecond = option {
        type = "int";
        default = 0;
        description = "Per-VM limit of new outgoing connections per second (network.new_conn_per_second); 0: none.";
      };
      kbytesPerSecond = option {
        type = "int";
        default = 0;
        description = "Per-VM limit of traffic sent, in KiB per second (network.kbytes_per_second); 0: none.";
      };
      disableSMT = option {
        type = "bool";
        default = false;
        description = "Turn simultaneous multithreading off (security.allowSimultaneousMultithreading = false), against cross-VM side channels on shared cores.";
      };
      lockKernelModules = option {
        type = "bool";
        default = false;
        description = "Forbid loading kernel modules after boot (security.lockKernelModules); kvm.enable loads what the orchestrators need first.";
      };
    };
  };

  # The options of one orchestrator face; fireactions, fireteact and
  # fireglab differ only in their defaults.
  orchestrator = face:
    let f = faces.${face}; in {
      enable = option {
        type = "bool";
        default = false;
        description = "Run ${f.name}: ${f.description} jobs, each in its own microVM (systemd unit ${f.unit}).";
      };
      package = option {
        type = "package";
        defaultText = "self.packages.<system>.${face}";
        description = "The ${face} package (the fireactions program under this face's name, with fireactions-agent beside it).";
      };
      hostId = option {
        type.nullOr = "str";
        default = null;
        defaultText = "networking.hostName, lower-cased, other characters than a-z, 0-9 and - turned into -, cut to 20";
        description = "host_id: names this host in runner names (fa-<host_id>-<vm>).";
      };
      checkConfig = option {
        type = "bool";
        default = true;
        description = "Check the generated configuration at build time with `${face} validate --offline` (everything but the files and secrets, which are on the target host).";
      };
      metricsListen = option {
        type = "str";
        default = "127.0.0.1:${toString f.metricsPort}";
        description = "metrics.listen: host:port of the Prometheus endpoint; \"\" turns it off. Each face has its own default port.";
      };
      fleet = {
        urls = option {
          type.listOf = "str";
          default = [ ];
          description = "fleet.urls: NATS URLs (nats://host:4222 or tls://...) of the fleet's NATS cluster; hosts that set them share their demand, so no queued job boots a VM on two hosts (docs/fleet.md). Empty: no fleet section, the host serves every job it sees.";
        };
        credentialsFile = option {
          type.nullOr = "path";
          default = null;
          description = "Host file holding the NATS credentials (user JWT and NKey seed); loaded with LoadCredential and named in fleet.credentials_file as /run/credentials/${f.unit}/fleet-credentials. Set this or tokenFile (or insecureNoAuth).";
        };
        tokenFile = option {
          type.nullOr = "path";
          default = null;
          description = "Host file holding the NATS token the fleet's servers require; loaded with LoadCredential and named in fleet.token_file as /run/credentials/${f.unit}/fleet-token. Set this or credentialsFile (or insecureNoAuth).";
        };
        insecureNoAuth = option {
          type = "bool";
          default = false;
          description = "fleet.insecure_no_auth: connect to NATS without credentials or token. Unsafe: any CI job that reaches NATS could squat or delete the fleet's claims.";
        };
        claimTTL = option {
          type = "str";
          default = "30s";
          description = "fleet.claim_ttl: how long a claim outlives its holder's last refresh (1s-30s); the same on every host of the fleet.";
        };
        replicas = option {
          type = "int";
          default = 1;
          description = "fleet.replicas: how many NATS servers keep the fleet's KV buckets (1-5): 3 on a three-node NATS cluster, so that losing one node does not stop claiming. Fixed when the buckets are first made; the same on every host of the fleet.";
        };
        onUnreachable = option {
          type.enum = [ "fail" "local" ];
          default = "fail";
          description = "fleet.on_unreachable: when NATS cannot be reached at start, fail (systemd restarts the unit) or serve locally, as without a fleet, until restarted.";
        };
      };
      vmm = {
        driver = option {
          type.enum = [ "qemu" "firecracker" ];
          default = "qemu";
          description = "The microVM monitor (vmm.driver): qemu (QEMU's microvm machine; KVM when usable, else TCG) or firecracker (KVM only, each VM jailed: its own chroot, uid/gid and cgroup). The unit's sandbox follows: the jailer's capabilities are granted only with firecracker.";
        };
        firecracker = {
          package = option {
            type = "package";
            defaultText = "pkgs.firecracker";
            description = "The Firecracker release whose firecracker and jailer binaries run the VMs (vmm.firecracker.binary, jailer_binary).";
          };
          uid = option {
            type = "int";
            default = f.jailerIds;
            description = "vmm.firecracker.uid: the first uid of the jailed VMMs; the VM at offset n of network.cidr runs as uid+n. Nothing else on the host may use uid .. uid + the size of network.cidr.";
          };
          gid = option {
            type = "int";
            default = f.jailerIds;
            description = "vmm.firecracker.gid: the first gid of the jailed VMMs, like uid.";
          };
          mmds = option {
            type = "bool";
            default = false;
            description = "vmm.firecracker.mmds: give each guest Firecracker's MMDS with its VM's non-secret metadata.";
          };
        };
      };
      network = {
        bridge = option {
          type = "str";
          default = f.bridge;
          description = "network.bridge: the bridge this orchestrator creates; registered in services.microvm-base.bridges.";
        };
        cidr = option {
          type = "str";
          default = f.cidr;
          description = "network.cidr: the guests' IPv4 prefix; must not overlap another bridge's.";
        };
        agentPort = option {
          type = "port";
          default = 8089;
          description = "network.agent_port: TCP port on the gateway for the guest agents' reports.";
        };
      };
      api = {
        listen = option {
          type.nullOr = "str";
          default = null;
          description = "api.listen: also serve the API on TCP (host:port) for remote clients; null: the Unix socket ${f.socket} only.";
        };
        tokensFile = option {
          type.nullOr = "path";
          default = null;
          description = "Host file of bearer tokens for api.listen (one a line); passed as a systemd credential, never copied to the Nix store.";
        };
        tlsCertFile = option {
          type.nullOr = "path";
          default = null;
          description = "Host file: PEM certificate for api.listen; a systemd credential.";
        };
        tlsKeyFile = option {
          type.nullOr = "path";
          default = null;
          description = "Host file: PEM key of tlsCertFile; a systemd credential.";
        };
      };
      forges = option {
        type.attrsOf.submodule = {
          type = option {
            type.enum = [ "github" "gitea" "gitlab" ];
            default = f.forge;
            description = "The forge's type.";
          };
          url = option {
            type.nullOr = "str";
            default = null;
            description = "url: the forge's base URL (github: the REST API base; null there means https://api.github.com). Required for gitea and gitlab.";
          };
          guestUrl = option {
            type.nullOr = "str";
            default = null;
            description = "guest_url: the forge's URL as guests reach it, when it differs.";
          };
          tokenFile = option {
            type.nullOr = "path";
            default = null;
            description = "Host file holding the scope-wide API token (for example a sops-nix secret's path); loaded with LoadCredential and named in token_file as /run/credentials/${f.unit}/forge-<name>-token.";
          };
          appId = option {
            type.nullOr = "int";
            default = null;
            description = "github: the GitHub App's ID (with appPrivateKeyFile), instead of a token.";
          };
          appPrivateKeyFile = option {
            type.nullOr = "path";
            default = null;
            description = "github: host file of the App's private key; a systemd credential.";
          };
          installationId = option {
            type.nullOr = "int";
            default = null;
            description = "github: the App installation; null: looked up from each pool's scope.";
          };
          webhookSecretFile = option {
            type.nullOr = "path";
            default = null;
            description = "Host file holding the webhook secret; a systemd credential. null: no webhooks.";
          };
          caFile = option {
            type.nullOr = "path";
            default = null;
            description = "ca_file: PEM bundle to trust for the forge's TLS certificate (not a secret; used in place).";
          };
          flavor = option {
            type.nullOr.enum = [ "gitea" "forgejo" "auto" ];
            default = null;
            description = "gitea: flavor, which server it is; forgejo also gives its pools the Forgejo runner's guest root (forgejo-runner at /bin/forgejo-runner). null: auto, detected at run time, with act_runner's guest root.";
          };
        };
        default = { };
        description = "Forge connections by name; pools refer to them. Secrets are host files handed to the unit as systemd credentials.";
      };
      pools = option {
        type.attrsOf.submodule = {
          forge = option {
            type.nullOr = "str";
            default = null;
            description = "The forge (a name in forges); null: the only one.";
          };
          size = option {
            type.enum = sizeNames;
            default = "medium";
            description = "Preset size: small (1 GiB, 1 vCPU, at most 2 VMs), medium (2 GiB, 2 vCPUs, 5) or large (4 GiB, 4 vCPUs, 10).";
          };
          scope = option {
            type.nullOr = "str";
            default = null;
            description = "scope: where runners register (instance, org:NAME, repo:OWNER/NAME, enterprise:NAME, group:PATH, project:PATH); null: instance (github pools must set one).";
          };
          labels = option {
            type.nullOr.listOf = "str";
            default = null;
            defaultText = "the forge's usual labels and \"${face}-<size>\"";
            description = "labels the runners offer.";
          };
          repos = option {
            type.listOf = "str";
            default = [ ];
            description = "github org or enterprise pools: the repositories (OWNER/NAME) whose queued runs are polled.";
          };
          installationId = option {
            type.nullOr = "int";
            default = null;
            description = "github pools of an App forge: installation_id, the App installation this pool acts as (one App in several organisations); null: the forge's installationId, else looked up from the scope.";
          };
          minIdle = option {
            type.nullOr = "int";
            default = null;
            defaultText = "the size's (small 0, medium and large 1)";
            description = "min_idle: idle VMs kept booted.";
          };
          max = option {
            type.nullOr = "int";
            default = null;
            defaultText = "the size's (2, 5, 10)";
            description = "max: most VMs at once.";
          };
          kernel = option {
            type.nullOr = "path";
            default = null;
            defaultText = "services.microvm-base.kernel.image";
            description = "vm.kernel: the guest kernel image.";
          };
          kernelModules = option {
            type.listOf = "str";
            default = [ ];
            description = "vm.kernel_modules: guest kernel modules the agent loads (needs a module tree: microvm-base's, or modulesDir).";
          };
          modulesDir = option {
            type.nullOr = "path";
            default = null;
            defaultText = "services.microvm-base.kernel.modulesDir when kernelModules is set";
            description = "vm.modules_dir: the module tree for kernelModules.";
          };
          rootInitramfs = option {
            type.nullOr = "path";
            default = null;
            defaultText = "${f.stateDir}/boot/<runner>-root.cpio.gz";
            description = "vm.root_initramfs: the guest root archive (runner agent, shell, tools), for example built with `fireactions guest-root`.";
          };
          warmStart = option {
            type = "bool";
            default = false;
            description = "warm_start: start the pool's VMs by restoring a saved template instead of booting each (vmm.driver qemu or firecracker; rootInitramfs pools, or image pools with qemu; a failed restore boots cold). Restored VMs share the template's unwritten memory pages (a cache-timing side channel between them): for pools whose jobs share one trust domain.";
          };
          settings = option {
            type = "json";
            default = { };
            description = "Further keys of this pools[] entry (runner, timeouts, ...; docs/config.md), merged over the preset.";
          };
        };
        default = { };
        description = "Pools by name, each from a size preset for its forge's type.";
      };
      settings = option {
        type = "json";
        default = { };
        description = "The binary's configuration (docs/config.md), merged over what the options above generate: attribute sets merge, other values (lists too) replace. Written as JSON, checked at build time, never holding a secret (secrets are *_file paths under /run/credentials/${f.unit}).";
      };
    };

  registry-cache = {
    enable = option {
      type = "bool";
      default = false;
      description = "An OCI pull-through cache (Zot) for the guests, on every bridge's gateway; read-only to guests (no pushes).";
    };
    package = option {
      type = "package";
      defaultText = "pkgs.zot";
      description = "The Zot package.";
    };
    port = option {
      type = "port";
      default = 5000;
      description = "TCP port Zot listens on; opened to guests on every bridge (services.microvm-base.guestPorts.tcp).";
    };
    stateDir = option {
      type = "path";
      default = "/var/lib/registry-cache";
      description = "Zot's storage root, under /var/lib/ (Zot runs as a dynamic user, which may write only its state directory there).";
    };
    mirrors = option {
      type.attrsOf.submodule = {
        url = option { type = "str"; description = "The upstream registry's URL."; };
      };
      default = {
        "docker.io".url = "https://registry-1.docker.io";
        "ghcr.io".url = "https://ghcr.io";
        "quay.io".url = "https://quay.io";
        "gcr.io".url = "https://gcr.io";
      };
      description = "Upstream registries mirrored on demand, by name; images of docker.io appear under /docker.io/... in the cache.";
    };
    credentialsFile = option {
      type.nullOr = "path";
      default = null;
      description = "Host file of upstream credentials in Zot's sync format; a systemd credential, never in the store.";
    };
    rootRegistry = option {
      type.nullOr = "str";
      default = "docker.io";
      description = "The mirror served at the cache's root rather than under /<name>: Docker's registry-mirrors can only mirror Docker Hub, and only from a mirror's root. null: every mirror under /<name>.";
    };
    gcInterval = option {
      type = "str";
      default = "24h";
      description = "How often Zot collects garbage (unreferenced blobs).";
    };
    keepPulledWithin = option {
      type = "str";
      default = "336h";
      description = "The storage cap: images not pulled for this long are removed (Zot retention), and their blobs collected at the next garbage collection. Zot has no byte quota; for a hard one, put stateDir on a file system of its own.";
    };
    proxy = {
      enable = option {
        type = "bool";
        default = true;
        description = "A caching web proxy (Squid) for the guests on every bridge's gateway; the orchestrators give it to their guests as HTTP(S)_PROXY.";
      };
      package = option {
        type = "package";
        defaultText = "pkgs.squid";
        description = "The Squid package (built with OpenSSL and security_file_certgen, as nixpkgs' is).";
      };
      port = option {
        type = "port";
        default = 3128;
        description = "TCP port Squid listens on; opened to guests on every bridge.";
      };
      cacheSizeMiB = option {
        type = "int";
        default = 10240;
        description = "Disk the proxy's cache may take, in MiB.";
      };
      maxObjectSizeMiB = option {
        type = "int";
        default = 1024;
        description = "The largest response the proxy caches, in MiB.";
      };
      sslBump = {
        mode = option {
          type.enum = [ "off" "selective" "all" ];
          default = "off";
          description = "TLS interception: off (HTTPS is tunnelled untouched), selective (only sslBump.domains are intercepted, so their downloads are cached; with no domains, nothing is) or all. Whenever something is intercepted, a CA is made on the host (its key never in the Nix store) and the guests trust it.";
        };
        domains = option {
          type.listOf = "str";
          default = [ ];
          description = "selective: the server names to intercept; a leading dot takes subdomains (.example.com).";
        };
      };
    };
    settings = option {
      type = "json";
      default = { };
      description = "Zot's configuration, merged over the generated one.";
    };
  };
}
