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

  rendered = l.settings.render {
    inherit face;
    opts = cfg;
    hostName = config.networking.hostName;
    paths = {
      agent = "${cfg.package}/bin/fireactions-agent";
      qemu = "${base.qemu.package}/bin/qemu-system-x86_64";
      kernel = base.kernel.image;
      inherit (base.kernel) modulesDir;
    };
    inherit base;
  };
  secrets = l.settings.secrets face cfg;

  configJSON = pkgs.writeText "${face}.json" (builtins.toJSON rendered);
  # Checked at build time by the binary itself; --offline because the
  # kernel, guest root and secrets are the target host's files.
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "${face}-checked.json" { } ''
        ${cfg.package}/bin/${face} validate --offline ${configJSON}
        cp ${configJSON} $out
      ''
    else configJSON;

  drainSeconds = l.util.durationSeconds (rendered.drain_grace or "10m");
  caUnit = lib.optional (base.cache != null && base.cache.caFile != null) "registry-cache-ca.service";
in
{
  options.services.${face} = mkOptions (l.options.orchestrator face) (
    lib.optionalAttrs (defaultPackage != null) { package = defaultPackage pkgs; }
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
      path = [ pkgs.nftables pkgs.iproute2 ];
      restartTriggers = [ configFile ];

      serviceConfig = {
        Type = "notify"; # the binary says READY=1 once pools run
        NotifyAccess = "main";
        WatchdogSec = "60s"; # pinged every 30 s
        ExecStart = "${cfg.package}/bin/${face} serve ${configFile}";
        Restart = "on-failure";
        RestartSec = "5s";
        # SIGTERM drains: busy VMs get drain_grace, then the binary ends
        # them itself; a minute more for the clean-up.
        TimeoutStopSec = toString (drainSeconds + 60);
        KillMode = "mixed"; # SIGTERM to the binary only; it ends its VMs

        # Secrets: host files handed over as credentials
        # (/run/credentials/${f.unit}/NAME, readable by this unit only).
        LoadCredential = map (s: "${s.name}:${s.source}") secrets;

        StateDirectory = face;
        StateDirectoryMode = "0700";
        RuntimeDirectory = face;
        RuntimeDirectoryMode = "0700";
        UMask = "0077";

        # Root, but with one capability: CAP_NET_ADMIN for the bridge, the
        # TAPs and the nftables tables. Root rather than a user with that
        # ambient capability because serve writes
        # /proc/sys/net/ipv4/ip_forward (owned by root) when nat is on.
        User = "root";
        CapabilityBoundingSet = [ "CAP_NET_ADMIN" ];
        AmbientCapabilities = [ ];
        NoNewPrivileges = true;

        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ProtectKernelModules = true; # microvm-base loads kvm, tun, bridge at boot
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];

        # Relaxed: serve writes net.ipv4.ip_forward (see above).
        ProtectKernelTunables = false;
        # Relaxed: the VMM needs /dev/kvm, /dev/net/tun and vhost-net, so
        # no PrivateDevices; only these devices are allowed instead.
        PrivateDevices = false;
        DevicePolicy = "closed";
        DeviceAllow = [ "/dev/kvm rw" "/dev/net/tun rw" "/dev/vhost-net rw" ];
        # Relaxed: QEMU runs as a child under this unit's filters, and its
        # TCG fallback (accel auto without working KVM) generates code.
        MemoryDenyWriteExecute = false;
        # Relaxed: QEMU pins and prioritises its threads (@resources).
        SystemCallFilter = [ "@system-service" "@resources" ];
        SystemCallErrorNumber = "EPERM";
        # Not set: PrivateNetwork (the bridge and TAPs live in the host's
        # network namespace) and ProcSubset=pid (/proc/sys is needed).
      };
    };
  };
}
