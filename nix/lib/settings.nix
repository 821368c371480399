# Rendering an orchestrator's typed options into the binary's configuration
# (docs/config.md is its schema). The NixOS module and the checks call the
# same function; only the store paths differ (real packages there, stand-in
# paths here).
{ faces, presets, util, registrycache }:
let
  inherit (util) filterNulls recursiveMerge optional concatMap;
  inherit (builtins) attrNames length head mapAttrs;
in
rec {
  # secrets: the systemd credentials of a face: [{ name; source; }], source
  # a host file, name the file's name under /run/credentials/<unit>/.
  secrets = face: opts:
    let
      fo = opts.forges;
      # option: the option that names it, for the assertions' messages;
      # secret: false for a credential that is public (a certificate).
      one = name: option: source: optional (source != null) { inherit name source; option = "services.${face}.${option}"; secret = name != "api-tls-cert"; };
    in
    one "api-tokens" "api.tokensFile" opts.api.tokensFile
    ++ one "api-tls-cert" "api.tlsCertFile" opts.api.tlsCertFile
    ++ one "api-tls-key" "api.tlsKeyFile" opts.api.tlsKeyFile
    ++ one "fleet-credentials" "fleet.credentialsFile" opts.fleet.credentialsFile
    ++ one "fleet-token" "fleet.tokenFile" opts.fleet.tokenFile
    ++ concatMap
      (n:
        one "forge-${n}-token" "forges.${n}.tokenFile" fo.${n}.tokenFile
        ++ one "forge-${n}-app-key" "forges.${n}.appPrivateKeyFile" fo.${n}.appPrivateKeyFile
        ++ one "forge-${n}-webhook-secret" "forges.${n}.webhookSecretFile" fo.${n}.webhookSecretFile)
      (attrNames fo);

  # credential: where a secret is inside the unit, or null when not set.
  credential = face: name: source: if source == null then null else "${faces.${face}.credentialsDir}/${name}";

  # poolForge: the forge a pool uses: its own, or the only one.
  poolForge = face: opts: poolName: pool:
    if pool.forge != null then pool.forge
    else if length (attrNames opts.forges) == 1 then head (attrNames opts.forges)
    else throw "services.${face}.pools.${poolName}.forge: must be set when there is not exactly one forge (there are: ${toString (attrNames opts.forges)})";

  # render: the configuration file's content, as an attribute set.
  #   face      fireactions, fireteact or fireglab
  #   opts      the face's options, defaults filled (spec.withDefaults)
  #   hostName  networking.hostName (host_id's default)
  #   paths     { agent; qemu; kernel; vmlinux; modulesDir; firecracker;
  #             jailer; guestRoots.<forge type, or forgejo>; } store paths
  #   base      services.microvm-base: { guestPorts; security; cache; }
  #             (cache: the registry cache's endpoints, or null)
  render = { face, opts, hostName, paths, base }:
    let
      f = faces.${face};
      cred = credential face;
      sec = base.security;
      nonEmpty = l: if l == [ ] then null else l;
      positive = n: if n > 0 then n else null;
      forge = name: fo: filterNulls {
        inherit name;
        inherit (fo) type url;
        guest_url = fo.guestUrl;
        token_file = cred "forge-${name}-token" fo.tokenFile;
        app_id = fo.appId;
        app_private_key_file = cred "forge-${name}-app-key" fo.appPrivateKeyFile;
        installation_id = fo.installationId;
        webhook_secret_file = cred "forge-${name}-webhook-secret" fo.webhookSecretFile;
        ca_file = fo.caFile;
        flavor = fo.flavor;
      };
      pool = name: p:
        let
          forgeName = poolForge face opts name p;
          fo = opts.forges.${forgeName} or (throw "services.${face}.pools.${name}.forge: no forge named ${forgeName}");
          forgeType = fo.type;
          # A Forgejo's pools run the Forgejo runner's guest root.
          rootOf = if forgeType == "gitea" && fo.flavor == "forgejo" then "forgejo" else forgeType;
        in
        presets.mkPool {
          inherit face name forgeType;
          forge = forgeName;
          inherit (p) size scope labels repos installationId minIdle max kernelModules rootInitramfs warmStart settings;
          kernel = if p.kernel != null then p.kernel else if opts.vmm.driver == "firecracker" then paths.vmlinux else paths.kernel;
          guestRoot = (paths.guestRoots or { }).${rootOf} or null;
          modulesDir =
            if p.modulesDir != null then p.modulesDir
            else if p.kernelModules != [ ] then paths.modulesDir
            else null;
        };
      generated = {
        host_id = if opts.hostId != null then opts.hostId else util.sanitizeHostID hostName;
        state_dir = f.stateDir;
        agent_path = paths.agent;
        log = { level = "info"; format = "json"; }; # journald keeps the fields
        api = filterNulls {
          socket = f.socket;
          listen = opts.api.listen;
          tokens_file = cred "api-tokens" opts.api.tokensFile;
          tls_cert_file = cred "api-tls-cert" opts.api.tlsCertFile;
          tls_key_file = cred "api-tls-key" opts.api.tlsKeyFile;
        };
        metrics.listen = opts.metricsListen;
        network = filterNulls {
          inherit (opts.network) bridge cidr;
          agent_port = opts.network.agentPort;
          allow_tcp_ports = nonEmpty base.guestPorts.tcp;
          allow_udp_ports = nonEmpty base.guestPorts.udp;
          block_private = if sec.blockPrivateNetworks then true else null;
          new_conn_per_second = positive sec.newConnectionsPerSecond;
          kbytes_per_second = positive sec.kbytesPerSecond;
        };
        vmm =
          if opts.vmm.driver == "firecracker" then {
            driver = "firecracker";
            firecracker = {
              binary = paths.firecracker;
              jailer_binary = paths.jailer;
              inherit (opts.vmm.firecracker) uid gid mmds;
            };
          }
          else { driver = "qemu"; qemu.binary = paths.qemu; };
        forges = map (n: forge n opts.forges.${n}) (attrNames opts.forges);
        pools = map (n: pool n opts.pools.${n}) (attrNames opts.pools);
      } // util.optionalAttrs (opts.fleet.urls != [ ]) {
        fleet = filterNulls {
          inherit (opts.fleet) urls;
          credentials_file = cred "fleet-credentials" opts.fleet.credentialsFile;
          token_file = cred "fleet-token" opts.fleet.tokenFile;
          insecure_no_auth = if opts.fleet.insecureNoAuth then true else null;
          claim_ttl = opts.fleet.claimTTL;
          inherit (opts.fleet) replicas;
          on_unreachable = opts.fleet.onUnreachable;
        };
      } // util.optionalAttrs ((base.cache or null) != null) {
        registry_cache = registrycache.settingsFor { inherit (opts.network) cidr; inherit (base) cache; };
      };
    in
    recursiveMerge generated opts.settings;

  # assertions: what the module checks before building, as NixOS
  # assertions ({ assertion; message; }).
  assertions = { face, opts, dnsEnabled }:
    let
      forgeNames = attrNames opts.forges;
      pools = attrNames opts.pools;
    in
    [
      {
        assertion = pools != [ ] || (opts.settings.pools or [ ]) != [ ];
        message = "services.${face}: no pools (set services.${face}.pools.<name>, or settings.pools)";
      }
      {
        assertion = dnsEnabled || (opts.settings.network or { }) ? dns;
        message = "services.${face}: guests resolve names through their gateway by default, but services.microvm-base.dns.enable is false: set services.${face}.settings.network.dns";
      }
    ]
    ++ map
      (n: {
        assertion = opts.pools.${n}.forge != null || length forgeNames == 1;
        message = "services.${face}.pools.${n}.forge: must be set when there is not exactly one forge (there are: ${toString forgeNames})";
      })
      pools
    ++ map
      (n:
        let fo = opts.forges.${n}; in {
          assertion = fo.tokenFile != null || (fo.appId != null && fo.appPrivateKeyFile != null);
          message = "services.${face}.forges.${n}: set tokenFile, or (github) appId and appPrivateKeyFile";
        })
      forgeNames
    # A secret in the store is every local user's: the credential's copy
    # is 0400, so the daemon's own check of the file's mode never sees it.
    ++ map
      (s: {
        assertion = !(s.secret && inStore s.source);
        message = "${s.option}: ${s.source} is in the Nix store, which every user of the host can read: name a file outside it (a sops-nix or agenix secret under /run)";
      })
      (secrets face opts);

  # inStore: whether a path (a string) lies in the Nix store.
  inStore = p: builtins.substring 0 (builtins.stringLength builtins.storeDir + 1) p == builtins.storeDir + "/";
}
