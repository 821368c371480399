# services.registry-cache: Zot as an OCI pull-through cache for the guests,
# read-only to them. The configuration is rendered by nix/lib/zot.nix.
{ config, lib, pkgs, ... }:
let
  l = import ../lib;
  cfg = config.services.registry-cache;
  mkOptions = import ./options.nix { inherit lib pkgs; };
  credentials = "/run/credentials/registry-cache.service/upstream-credentials";
  zotConfig = l.zot.config {
    # Every address; the host firewall opens the port on the VM bridges
    # only (services.microvm-base.guestPorts.tcp).
    address = "0.0.0.0";
    inherit (cfg) port mirrors gcInterval settings;
    rootDirectory = cfg.stateDir;
    credentialsFile = if cfg.credentialsFile != null then credentials else null;
  };
in
{
  options.services.registry-cache = mkOptions l.options.registry-cache { package = pkgs.zot; };

  config = lib.mkIf cfg.enable {
    assertions = [{
      assertion = !(l.zot.pushAllowed zotConfig);
      message = "services.registry-cache.settings: an access policy lets clients push; the cache must stay read-only to guests";
    }];

    services.microvm-base.guestPorts.tcp = [ cfg.port ];

    systemd.services.registry-cache = {
      description = "OCI pull-through cache for CI guests (Zot)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        ExecStart = "${cfg.package}/bin/zot serve ${pkgs.writeText "zot.json" (builtins.toJSON zotConfig)}";
        Restart = "on-failure";
        LoadCredential = lib.optional (cfg.credentialsFile != null) "upstream-credentials:${cfg.credentialsFile}";
        DynamicUser = true;
        StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;
        UMask = "0077";
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
    };
  };
}
