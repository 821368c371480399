# What `make nix-check` evaluates with nixpkgs' module system (see
# default.nix): every module alone and with the default one, the
# documentation's scenarios, the profiles, the flake's outputs and its
# fleet hosts. Each configuration gives its failed assertions, warnings
# and each enabled face's unit and configuration file.
{ }:
let
  e = import ./. { };
  inherit (e) lib;
  l = import ../lib;
  faces = builtins.attrNames l.faces;

  # force: v evaluated all through, but a package only to its store path
  # (its build inputs are the builder's business).
  force = v:
    if builtins.isAttrs v then
      (if v ? outPath then builtins.isString (toString v) else builtins.all force (builtins.attrValues v))
    else if builtins.isList v then builtins.all force v
    else if builtins.isFunction v then true
    else builtins.seq v true;

  # report: what a check reads of an evaluated configuration.
  report = config: {
    # Every definition of every NixOS option we set, type-checked.
    # (sops.defaultSopsFile has no default, as in sops-nix: read only when
    # a secret names no file of its own.)
    checked = force {
      inherit (config) services systemd networking boot users environment security nix system disko;
      sops = removeAttrs config.sops [ "defaultSopsFile" ];
    };
    assertions = e.failedAssertions config;
    inherit (config) warnings;
    units = lib.genAttrs (builtins.filter (f: config.services.${f}.enable) faces) (e.unit config);
    firewall = config.networking.firewall.interfaces;
    kernelModules = config.boot.kernelModules;
    tmpfiles = config.systemd.tmpfiles.rules;
    services = builtins.attrNames config.systemd.services;
  };
  evalReport = modules: report (e.nixos modules).config;

  # Every face's forge and its default pool's scope, as the fleet
  # registry's forge data would set them.
  forgesOfAHost = {
    services = lib.genAttrs faces (f: {
      forges.${l.faces.${f}.forge} = l.presets.exampleForges.${l.faces.${f}.forge};
      pools.default.scope = l.presets.exampleScopes.${l.faces.${f}.forge};
    });
  };

  examples = builtins.filter (n: builtins.match ".*\\.nix" n != null) (builtins.attrNames (builtins.readDir ../examples));

  # The flake, its inputs being nixpkgs' lib with this evaluator as
  # nixosSystem, the stand-in packages, and disko's and sops-nix's options.
  flake =
    let
      nixpkgs = {
        outPath = ./nixpkgs.nix;
        lib = lib // { nixosSystem = { modules, ... }: e.nixos modules // { pkgs = e.pkgs; }; };
        legacyPackages = { x86_64-linux = e.pkgs; aarch64-linux = import ./pkgs.nix { system = "aarch64-linux"; }; };
      };
      self = (import ../../flake.nix).outputs {
        inherit self nixpkgs;
        disko.nixosModules.disko = { };
        sops-nix.nixosModules.sops = { };
        colmena = { lib.makeHive = hive: hive; packages = builtins.mapAttrs (_: _: { colmena = e.pkgs.jq; }) nixpkgs.legacyPackages; };
      } // { outPath = toString ../..; };
    in
    self;
in
{
  # Each of nixosModules alone, and with default: whether it evaluates
  # (forcing every option's definition) with nothing enabled.
  modules = builtins.mapAttrs
    (name: m: {
      alone = (e.nixos [ m ]).config.services.microvm-base.enable;
      withDefault = (e.nixos [ e.modules.default m ]).config.services.microvm-base.enable;
    })
    e.modules;

  # The documentation's scenarios (nix/examples), each a whole host with
  # the default module.
  scenarios = lib.listToAttrs (map
    (n: { name = lib.removeSuffix ".nix" n; value = evalReport [ e.modules.default (../examples + "/${n}") { networking.hostName = "ci"; } ]; })
    examples);

  # Every profile as a host's only module besides default and the forge
  # data a host (or the fleet registry) gives.
  profiles = builtins.mapAttrs (_: p: evalReport [ e.modules.default p forgesOfAHost ]) (import ../profiles);

  # The flake's outputs and its fleet hosts.
  flake = {
    outputs = builtins.attrNames flake;
    modules = builtins.attrNames flake.nixosModules;
    packages = builtins.attrNames flake.packages.x86_64-linux;
    hosts = builtins.mapAttrs (_: c: report c.config) flake.nixosConfigurations;
    colmena = builtins.attrNames flake.colmena;
    checks = builtins.attrNames flake.checks.x86_64-linux;
    profiles = builtins.attrNames flake.profiles;
  };

  # One module with every face enabled on an image pool and on
  # Firecracker: the sandboxes that follow.
  sandboxes =
    let
      gitea = { url = "https://gitea.example.invalid"; tokenFile = "/run/secrets/gitea-token"; };
      host = pools: driver: evalReport [
        e.modules.default
        { services.fireteact = { enable = true; forges.gitea = gitea; inherit pools; vmm.driver = driver; }; }
      ];
    in
    {
      initramfs = host { default = { }; } "qemu";
      image = host { default.settings.vm.image = "registry.example.invalid/runner:1"; } "qemu";
      firecracker = host { default = { }; } "firecracker";
      forgejo = evalReport [
        e.modules.default
        { services.fireteact = { enable = true; forges.gitea = gitea // { flavor = "forgejo"; }; pools.default = { }; }; }
      ];
    };

  # What services.microvm-base.monitoring provisions on a host running
  # fireteact (metrics on its default port) and fireglab (on every
  # address), with Prometheus and Grafana on, with the options off, and
  # without Prometheus and Grafana.
  monitoring =
    let
      host = extra: (e.nixos [
        e.modules.default
        forgesOfAHost
        {
          services.fireteact.enable = true;
          services.fireglab = { enable = true; metricsListen = lib.mkDefault "0.0.0.0:9600"; };
        }
        extra
      ]).config;
      show = c: {
        checked = force { inherit (c.services) prometheus grafana; };
        assertions = e.failedAssertions c;
        ruleFiles = map toString c.services.prometheus.ruleFiles;
        scrapeConfigs = c.services.prometheus.scrapeConfigs;
        grafanaProvision = c.services.grafana.provision.enable;
        providers =
          let st = c.services.grafana.provision.dashboards.settings; in
          if st == null then [ ] else map (p: { inherit (p) name type; path = toString p.options.path; }) st.providers;
      };
      monitored = { services.prometheus.enable = true; services.grafana.enable = true; };
    in
    {
      on = show (host monitored);
      off = show (host (lib.recursiveUpdate monitored { services.microvm-base.monitoring = { prometheus = false; grafana = false; }; }));
      without = show (host { });
      metricsOff = show (host (lib.recursiveUpdate monitored { services.fireteact.metricsListen = ""; services.fireglab.metricsListen = ""; }));
    };

  # The Colmena tag fleet-nats (nix/lib/hive.nix, nix/profiles/
  # fleet-nats.nix) on a registry of three tagged hosts and one other,
  # each evaluated as hosts/hive.nix makes a node (its plan's services and
  # profile modules); and registries with a wrong number of tagged hosts.
  fleetNats =
    let
      registry = {
        fleet.fireteact = {
          forges.gitea = { url = "https://gitea.example.invalid"; tokenFile = "/run/secrets/gitea-token"; };
          pool.scope = "instance";
        };
        hosts = {
          nats-1 = { address = "10.0.0.1"; provider = "generic"; tags = [ "fleet-nats" "gitea-runners" ]; };
          nats-2 = { address = "10.0.0.2"; provider = "generic"; tags = [ "fleet-nats" "gitea-runners" ]; };
          nats-3 = { address = "10.0.0.3"; provider = "generic"; tags = [ "fleet-nats" "gitea-runners" ]; };
          worker = { address = "10.0.0.4"; provider = "generic"; tags = [ "gitea-runners" ]; };
        };
      };
      node = p: (e.nixos ([
        e.modules.default
        { _module.args.registry = registry; networking.hostName = p.name; services = lib.mapAttrsRecursive (_: lib.mkDefault) p.services; }
      ] ++ map (m: ../profiles + "/${m}") p.modules)).config;
      show = c:
        let nats = c.systemd.services.nats or null; in
        (report c) // {
          nats = {
            inherit (c.services.nats) enable jetstream serverName port settings;
            serviceConfig = if nats == null then null else nats.serviceConfig;
            start = if nats == null then null else nats.serviceConfig.ExecStart.text;
            conf = if nats == null then null else (builtins.head nats.restartTriggers).text;
          };
          tcpPorts = c.networking.firewall.allowedTCPPorts;
        };
      withTagged = n: registry // { hosts = lib.genAttrs (map (i: "n${toString i}") (lib.range 1 n)) (name: { address = "10.0.1.1"; provider = "generic"; tags = [ "fleet-nats" ]; }); };
    in
    {
      hosts = builtins.mapAttrs (_: p: show (node p)) (l.hive.plans registry);
      errors = { two = l.hive.errors (withTagged 2); four = l.hive.errors (withTagged 4); three = l.hive.errors (withTagged 3); };
    };

  # A host in a fleet (docs/fleet.md): its NATS URLs and credentials
  # become the fleet section; one without fleet options has none.
  fleet =
    let
      gitea = { url = "https://gitea.example.invalid"; tokenFile = "/run/secrets/gitea-token"; };
      host = fleet: evalReport [
        e.modules.default
        { services.fireteact = { enable = true; forges.gitea = gitea; pools.default = { }; inherit fleet; }; }
      ];
    in
    {
      member = host { urls = [ "nats://10.0.0.1:4222" "nats://10.0.0.2:4222" ]; credentialsFile = "/run/secrets/nats.creds"; claimTTL = "10s"; replicas = 3; };
      tokened = host { urls = [ "nats://10.0.0.1:4222" ]; tokenFile = "/run/secrets/nats.token"; };
      alone = host { };
    };
}
