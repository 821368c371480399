# The one implementation of the three orchestrator modules: orchestrator
# { face = "fireteact"; } is services.fireteact. The faces differ only in
# the defaults of nix/lib/faces.nix; rendering and checks are plain Nix in
# nix/lib/settings.nix.
{ face, defaultPackage ? null }:
{ config, lib, pkgs, ... }:
let
  l = import ../lib;
  f = l.faces.${face};
  cfg = config.services.${face};
  base = config.services.microvm-base;
  mkOptions = import ./options.nix { inherit lib pkgs; };
  firecracker = cfg.vmm.driver == "firecracker";

  # The default guest root of each forge type: busybox, bash and the
  # forge's runner from nixpkgs (built only for the forges in use).
  guestRoots = import ../packages/guest-roots.nix { inherit pkgs; fireactions = cfg.package; };

  rendered = l.settings.render {
    inherit face;
    opts = cfg;
    hostName = config.networking.hostName;
    paths = {
      agent = "${cfg.package}/bin/fireactions-agent";
      qemu = "${base.qemu.package}/bin/qemu-system-${pkgs.stdenv.hostPlatform.qemuArch}";
      kernel = base.kernel.image;
      inherit (base.kernel) vmlinux modulesDir;
      firecracker = "${cfg.vmm.firecracker.package}/bin/firecracker";
      jailer = "${cfg.vmm.firecracker.package}/bin/jailer";
      guestRoots = builtins.mapAttrs (_: r: { inherit (r) archive runnerPath; }) guestRoots;
    };
    inherit base;
  };
  secrets = l.settings.secrets face cfg;

  # Pools whose root is an OCI image: the unit flattens images, so it
  # needs the capabilities and tools of l.sandbox.
  imagePools = lib.any (p: (p.vm or { }) ? image) (rendered.pools or [ ]);
  sandbox = l.sandbox.unit { inherit imagePools firecracker; };

  configJSON = pkgs.writeText "${face}.json" (builtins.toJSON rendered);
  # Checked at build time by the binary itself; --offline because the
  # kernel, guest root and secrets are the target host's files.
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "${face}-checked.json" { config = configJSON; } ''
        ${cfg.package}/bin/${face} validate --offline "$config"
        cp "$config" $out
      ''
    else configJSON;

  drainSeconds = l.util.durationSeconds (rendered.drain_grace or "10m");
  caUnit = lib.optional (base.cache != null && base.cache.caFile != null) "registry-cache-ca.service";
in
{
  # One module per face however often it is imported (the default module
  # and a host's own imports may both bring it).
  key = "nixos-fireactions/modules/${face}";
  imports = [ ./microvm-base.nix ];

  options.services.${face} = mkOptions (l.options.orchestrator face) (
    lib.optionalAttrs (defaultPackage != null) { package = defaultPackage pkgs; }
    // { vmm.firecracker.package = pkgs.firecracker; }
  );

  config = lib.mkIf cfg.enable {
    assertions = l.settings.assertions { inherit face; opts = cfg; dnsEnabled = base.dns.enable; };

    services.microvm-base = {
      enable = true;
      bridges.${cfg.network.bridge} = {
        inherit (cfg.network) cidr;
        owner = face;
        tcpPorts = [ cfg.network.agentPort ];
      };
    };

    environment.systemPackages = [ cfg.package ]; # `${face} ps` and friends

    systemd.services.${face} = {
      description = "${face}: ${f.description} jobs, each in its own microVM";
      wantedBy = [ "multi-user.target" ];
      # The registry cache's CA, when guests are to trust one, is made
      # before the configuration naming it is read.
      wants = [ "network-online.target" ] ++ caUnit;
      after = [ "network-online.target" ] ++ caUnit;
      # Exactly these tools (e2e TestUnitSandboxRunsAJob runs a job with
      # only them): not NixOS's default coreutils, grep, sed and systemd.
      path = map (name: pkgs.${name}) sandbox.path
        ++ lib.optional firecracker cfg.vmm.firecracker.package;
      enableDefaultPath = false;
      restartTriggers = [ configFile ];

      serviceConfig = {
        Type = "notify"; # the binary says READY=1 once pools run
        NotifyAccess = "main";
        WatchdogSec = "60s"; # pinged every 30 s
        # READY=1 follows the pull and flattening of every pool's image:
        # a runner image of gigabytes takes longer than systemd's 90 s,
        # which would kill and restart the start for ever.
        TimeoutStartSec = "30min";
        ExecStart = "${cfg.package}/bin/${face} serve ${configFile}";
        Restart = "on-failure";
        RestartSec = "5s";
        # SIGTERM drains: busy VMs get drain_grace, then the binary ends
        # them itself; a minute more for the clean-up.
        TimeoutStopSec = toString (drainSeconds + 60);
        # SIGTERM to the binary only: it drains and ends its VMs itself.
        # "process", not "mixed" or "control-group": when the binary
        # crashes, systemd stops the unit before restarting it, and those
        # would kill every VM then; the next start adopts them instead (a
        # busy job finishes in its VM).
        KillMode = "process";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID"; # pools are re-read

        # Secrets: host files handed over as credentials
        # (/run/credentials/${f.unit}/NAME, readable by this unit only).
        LoadCredential = map (s: "${s.name}:${s.source}") secrets;

        StateDirectory = face;
        StateDirectoryMode = "0700";
        RuntimeDirectory = face;
        RuntimeDirectoryMode = "0700";
        UMask = "0077";

        # Root with a bounding set of only what it uses (l.sandbox says
        # why each capability is there); the filters below follow it.
        User = "root";
        CapabilityBoundingSet = sandbox.capabilities;
        AmbientCapabilities = [ ];
        NoNewPrivileges = true;
      } // sandbox.serviceConfig;
    };
  };
}
