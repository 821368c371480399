# services.registry-cache: Zot as an OCI pull-through cache for the guests,
# read-only to them, and Squid as their caching web proxy, intercepting
# TLS only where asked, with a CA made on the host. The configurations are
# rendered by nix/lib/zot.nix, nix/lib/squid.nix and
# nix/lib/registrycache.nix; the orchestrators learn the endpoints through
# services.microvm-base.cache.
{ config, lib, pkgs, ... }:
let
  l = import ../lib;
  cfg = config.services.registry-cache;
  base = config.services.microvm-base;
  mkOptions = import ./options.nix { inherit lib pkgs; };
  credentials = "/run/credentials/registry-cache.service/upstream-credentials";
  zotConfig = l.zot.config {
    # Every address; the host firewall opens the port on the VM bridges
    # only (services.microvm-base.guestPorts.tcp).
    address = "0.0.0.0";
    inherit (cfg) port mirrors rootRegistry gcInterval keepPulledWithin settings;
    rootDirectory = cfg.stateDir;
    credentialsFile = if cfg.credentialsFile != null then credentials else null;
  };

  proxy = cfg.proxy;
  bump = l.squid.intercepts proxy.sslBump;
  proxyUser = "registry-cache-proxy";
  squidConfig = l.squid.config {
    inherit (proxy) port cacheSizeMiB maxObjectSizeMiB sslBump;
    guestNetworks = map (b: base.bridges.${b}.cidr) (builtins.attrNames base.bridges);
    gateways = l.microvm.gateways base.bridges;
    blockPrivate = base.security.blockPrivateNetworks;
    cacheDir = "/var/cache/${proxyUser}";
    inherit (l.registrycache) caCert caKey;
    certgen = "${proxy.package}/libexec/security_file_certgen";
    certDB = "/var/lib/${proxyUser}/ssl_db";
    runDir = "/run/${proxyUser}";
  };
  hardening = {
    CapabilityBoundingSet = [ ];
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" ];
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
  };
in
{
  # The endpoints go to services.microvm-base.cache.
  imports = [ ./microvm-base.nix ];

  options.services.registry-cache = mkOptions l.options.registry-cache {
    package = pkgs.zot;
    proxy.package = pkgs.squid;
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = map
        (f: {
          # The proxy connects from the host, past the face's firewall:
          # it refuses private ranges only by the host-wide option.
          assertion = !proxy.enable || base.security.blockPrivateNetworks
            || !(config.services.${f}.enable or false)
            || !((config.services.${f}.settings.network or { }).block_private or false);
          message = "services.${f}.settings.network.block_private: the guests' web proxy (services.registry-cache.proxy) would still reach private networks for them; set services.microvm-base.security.blockPrivateNetworks = true instead, which both honour";
        })
        (builtins.attrNames l.faces)
      ++ [
        {
          # Zot runs as a dynamic user, which may write only its
          # StateDirectory, and systemd keeps those under /var/lib.
          assertion = let dir = lib.removeSuffix "/" (toString cfg.stateDir); in
            lib.hasPrefix "/var/lib/" dir
            && lib.all (c: c != "" && c != "." && c != "..") (lib.splitString "/" (lib.removePrefix "/var/lib/" dir));
          message = "services.registry-cache.stateDir: ${toString cfg.stateDir} is not a directory under /var/lib/, where Zot (a dynamic user) may write; for a disk of its own, mount it at a directory under /var/lib/ and name that";
        }
        {
          assertion = !(l.zot.pushAllowed zotConfig);
          message = "services.registry-cache.settings: an access policy lets clients push; the cache must stay read-only to guests";
        }
        {
          # nixos-25.05's squid 6 is marked insecure; the pinned channel's
          # squid 7 is not. A package that is would fail the build later,
          # with a message about nixpkgs.config instead of this one.
          assertion = !proxy.enable || (proxy.package.meta.knownVulnerabilities or [ ]) == [ ];
          message = "services.registry-cache.proxy.package: ${proxy.package.name or "squid"} is marked insecure by nixpkgs (meta.knownVulnerabilities); use a nixpkgs with Squid 7 or later (nixos-unstable), or set proxy.enable = false";
        }
        {
          assertion = !proxy.enable || base.bridges != { };
          message = "services.registry-cache.proxy: no VM bridge to serve (enable an orchestrator, or set proxy.enable = false)";
        }
      ];

      services.microvm-base.guestPorts.tcp = (l.registrycache.forBase cfg).tcp;
      services.microvm-base.cache = (l.registrycache.forBase cfg).cache;

      systemd.services.registry-cache = {
        description = "OCI pull-through cache for CI guests (Zot)";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        serviceConfig = hardening // {
          ExecStart = "${cfg.package}/bin/zot serve ${pkgs.writeText "zot.json" (builtins.toJSON zotConfig)}";
          Restart = "on-failure";
          LoadCredential = lib.optional (cfg.credentialsFile != null) "upstream-credentials:${cfg.credentialsFile}";
          DynamicUser = true;
          StateDirectory = lib.removePrefix "/var/lib/" (lib.removeSuffix "/" (toString cfg.stateDir));
          UMask = "0077";
        };
      };
    }

    (lib.mkIf proxy.enable {
      users.users.${proxyUser} = { isSystemUser = true; group = proxyUser; };
      users.groups.${proxyUser} = { };

      systemd.services.registry-cache-proxy = {
        description = "Caching web proxy for CI guests (Squid)";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ] ++ lib.optional bump "registry-cache-ca.service";
        after = [ "network-online.target" ] ++ lib.optional bump "registry-cache-ca.service";
        # The certificate database of intercepted servers, once; then the
        # cache's swap directories.
        preStart = lib.optionalString bump ''
          [ -d /var/lib/${proxyUser}/ssl_db ] || ${proxy.package}/libexec/security_file_certgen -c -s /var/lib/${proxyUser}/ssl_db -M 16MB
        '' + ''
          ${proxy.package}/bin/squid -z -N -f ${pkgs.writeText "squid.conf" squidConfig}
        '';
        serviceConfig = hardening // {
          ExecStart = "${proxy.package}/bin/squid --foreground -s -YC -f ${pkgs.writeText "squid.conf" squidConfig}";
          ExecReload = "${proxy.package}/bin/squid -k reconfigure -f ${pkgs.writeText "squid.conf" squidConfig}";
          Restart = "on-failure";
          User = proxyUser;
          Group = proxyUser;
          StateDirectory = proxyUser;
          CacheDirectory = proxyUser;
          RuntimeDirectory = proxyUser;
          UMask = "0077";
        };
      };
    })

    (lib.mkIf (proxy.enable && bump) {
      # The CA: made on the host at first start, never in the Nix store.
      systemd.services.registry-cache-ca = {
        description = "CA of the guests' web proxy (made on this host)";
        wantedBy = [ "multi-user.target" ];
        path = [ pkgs.openssl pkgs.coreutils ];
        script = l.registrycache.caScript { owner = proxyUser; group = proxyUser; };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          StateDirectory = lib.removePrefix "/var/lib/" l.registrycache.caDir;
          StateDirectoryMode = "0755";
          UMask = "0077";
        };
      };
    })
  ]);
}
