# What `make nix-check` evaluates (nix-instantiate --eval --strict --json)
# and feeds to `fireactions validate --offline`: plain Nix only, so it runs
# without nixpkgs. Store paths are stand-ins; the NixOS modules pass real
# ones to the same functions.
{ registry ? builtins.fromJSON (builtins.readFile ../hosts/registry.json) }:
let
  l = import ./lib;
  inherit (l) spec options settings presets faces hive;
  inherit (builtins) attrNames listToAttrs concatMap mapAttrs;

  paths = face: {
    agent = "/nix/store/00000000000000000000000000000000-${face}/bin/fireactions-agent";
    qemu = "/nix/store/00000000000000000000000000000000-qemu/bin/qemu-system-x86_64";
    kernel = "/nix/store/00000000000000000000000000000000-linux/bzImage";
    modulesDir = "/nix/store/00000000000000000000000000000000-linux/lib/modules/6.12.8";
  };

  # microvm-base as the modules leave it: the registry cache adds its
  # ports to guestPorts.tcp and its endpoints as cache
  # (nix/modules/registry-cache.nix uses the same function).
  baseOf = services:
    let
      b = spec.withDefaults options.microvm-base (services.microvm-base or { });
      cache = spec.withDefaults options.registry-cache (services.registry-cache or { });
      add = l.registrycache.forBase cache;
    in
    if !cache.enable then b
    else b // { guestPorts = b.guestPorts // { tcp = b.guestPorts.tcp ++ add.tcp; }; inherit (add) cache; };

  renderFace = { face, services, hostName }:
    settings.render {
      inherit face hostName;
      opts = spec.withDefaults (options.orchestrator face) services.${face};
      paths = paths face;
      base = baseOf services;
    };

  # The preset of one size and forge as a whole host: one forge with
  # placeholder credentials, one pool.
  presetServices = { face, size }:
    let forgeType = faces.${face}.forge; in {
      ${face} = {
        enable = true;
        forges.${forgeType} = presets.exampleForges.${forgeType};
        pools.default = { inherit size; scope = presets.exampleScopes.${forgeType}; };
      };
    };
  presetConfig = face: size: renderFace { inherit face; services = presetServices { inherit face size; }; hostName = "preset-check"; };

  # Every module's options, as the services.* they are set under.
  allOptions = { inherit (options) microvm-base registry-cache; }
    // listToAttrs (map (f: { name = f; value = options.orchestrator f; }) (attrNames faces));

  plans = hive.plans registry;
  enabledFaces = services: builtins.filter (f: (services.${f}.enable or false)) (attrNames faces);
in
{
  # The 9 presets, by <face>-<size>, as configuration files.
  presets = listToAttrs (concatMap
    (face: map (size: { name = "${face}-${size}"; value = presetConfig face size; }) (attrNames l.sizes))
    (attrNames faces));

  # A deliberately wrong preset: a size no VM can have, put through the
  # same mkPool. The binary must reject the configuration.
  broken = presetConfig "fireteact" "small" // {
    pools = [
      (presets.mkPool {
        face = "fireteact";
        name = "default";
        forge = "gitea";
        forgeType = "gitea";
        size = "broken";
        sizes' = { broken = { vcpus = 0; memory_mib = 64; max = 0; min_idle = 1; }; };
        kernel = (paths "fireteact").kernel;
      })
    ];
  };

  # The example fleet: registry problems, option type errors, and one
  # configuration file per host and enabled face ("host/face").
  hosts = {
    errors = hive.errors registry;
    optionErrors = concatMap
      (p: map (e: "host ${p.name}: ${e}") (spec.check allOptions "services" p.services))
      (builtins.attrValues plans);
    configs = listToAttrs (concatMap
      (p: map
        (face: {
          name = "${p.name}/${face}";
          value = renderFace { inherit face; services = p.services; hostName = p.name; };
        })
        (enabledFaces p.services))
      (builtins.attrValues plans));
    profiles = mapAttrs (_: p: p.profiles) plans;
    secrets = mapAttrs (_: p: hive.sopsSecrets p.services) plans;
    modules = mapAttrs (_: p: p.modules) plans;
  };

  # The documentation's examples (nix/examples/*.nix, modules that use no
  # module arguments): option errors and configuration files by
  # "example/face".
  examples =
    let
      files = builtins.filter (n: builtins.match ".*\\.nix" n != null) (attrNames (builtins.readDir ./examples));
      load = n: { name = builtins.replaceStrings [ ".nix" ] [ "" ] n; services = ((import (./examples + "/${n}")) { }).services; };
      all = map load files;
      ours = services: builtins.intersectAttrs allOptions services;
    in
    {
      names = map (e: e.name) all;
      optionErrors = concatMap (e: map (x: "example ${e.name}: ${x}") (spec.check allOptions "services" (ours e.services))) all;
      configs = listToAttrs (concatMap
        (e: map
          (face: { name = "${e.name}/${face}"; value = renderFace { inherit face; services = e.services; hostName = "ci"; }; })
          (enabledFaces e.services))
        all);
    };

  # The registry cache's Zot configuration with its defaults.
  zot = let c = spec.withDefaults options.registry-cache { enable = true; }; in rec {
    config = l.zot.config {
      address = "0.0.0.0";
      inherit (c) port mirrors rootRegistry gcInterval keepPulledWithin;
      rootDirectory = c.stateDir;
      credentialsFile = "/run/credentials/registry-cache.service/upstream-credentials";
    };
    pushAllowed = l.zot.pushAllowed config;
  };

  # The guests' proxy: squid.conf for each SSL bump setting, on the three
  # faces' default bridges; and whether each intercepts.
  squid =
    let
      bumps = {
        off = { mode = "off"; domains = [ ]; };
        selective-none = { mode = "selective"; domains = [ ]; };
        selective = { mode = "selective"; domains = [ ".npmjs.org" "files.pythonhosted.org" ".npmjs.org" ]; };
        all = { mode = "all"; domains = [ ]; };
      };
      bridges = builtins.listToAttrs (map (f: { name = faces.${f}.bridge; value = { cidr = faces.${f}.cidr; }; }) (attrNames faces));
      render = sslBump: renderWith { inherit sslBump; };
      renderWith = { sslBump, blockPrivate ? false }: l.squid.config {
        inherit blockPrivate;
        port = 3128;
        guestNetworks = map (b: bridges.${b}.cidr) (attrNames bridges);
        gateways = l.microvm.gateways bridges;
        cacheDir = "/var/cache/registry-cache-proxy";
        cacheSizeMiB = 10240;
        maxObjectSizeMiB = 1024;
        inherit sslBump;
        inherit (l.registrycache) caCert caKey;
        certgen = "/nix/store/00000000000000000000000000000000-squid/libexec/security_file_certgen";
        certDB = "/var/lib/registry-cache-proxy/ssl_db";
        runDir = "/run/registry-cache-proxy";
      };
    in
    {
      configs = mapAttrs (_: render) bumps // {
        off-block-private = renderWith { sslBump = bumps.off; blockPrivate = true; };
      };
      intercepts = mapAttrs (_: l.squid.intercepts) bumps;
    };

  # The CA's oneshot script, and the cache's section of a fireteact
  # configuration with and without interception.
  registryCache = {
    caScript = l.registrycache.caScript { owner = "registry-cache-proxy"; group = "registry-cache-proxy"; };
    settings = mapAttrs
      (_: mode: (renderFace {
        face = "fireteact";
        hostName = "cache-check";
        services = presetServices { face = "fireteact"; size = "small"; } // {
          registry-cache = { enable = true; proxy.sslBump = { inherit mode; domains = [ ".npmjs.org" ]; }; };
        };
      }))
      { off = "off"; selective = "selective"; };
  };

  # The options of every module as documentation rows.
  optionRows = {
    microvm-base = spec.rows "services.microvm-base" options.microvm-base;
    registry-cache = spec.rows "services.registry-cache" options.registry-cache;
  } // listToAttrs (map (f: { name = f; value = spec.rows "services.${f}" (options.orchestrator f); }) (attrNames faces));
}
