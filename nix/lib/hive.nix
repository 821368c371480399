# The fleet: hosts/registry.json (hosts, their tags, the fleet's forge
# data) turned into a plan per host, from which hosts/hive.nix makes the
# Colmena nodes and the checks make configuration files.
{ profiles, util, faces }:
let
  inherit (builtins) mapAttrs attrNames concatMap filter elem length;
  hostPattern = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
  providers = [ "do" "hetzner" "generic" "bare-metal" ];
in
rec {
  # The fleet's NATS cluster (docs/fleet.md): the hosts tagged fleet-nats
  # each run one node of it (nix/profiles/fleet-nats.nix); every host's
  # orchestrators join the fleet through them.
  natsTag = "fleet-nats";
  natsClientPort = 4222;
  natsClusterPort = 6222;
  # natsHosts: the names of the hosts that run the cluster, sorted.
  natsHosts = registry: filter (n: elem natsTag (registry.hosts.${n}.tags or [ ])) (attrNames (registry.hosts or { }));
  # natsURLs: the client URLs of the cluster's nodes.
  natsURLs = registry: map (n: "nats://${registry.hosts.${n}.address or "?"}:${toString natsClientPort}") (natsHosts registry);
  # natsTokenFile: the file holding the cluster's token, on every host
  # (a sops secret: /run/secrets/...).
  natsTokenFile = registry: registry.fleetNats.tokenFile or "/run/secrets/fleet-nats-token";
  natsErrors = registry:
    let n = length (natsHosts registry); in
    if n == 0 || (n >= 3 && n - (n / 2) * 2 == 1) then [ ]
    else [ "tag ${natsTag}: ${toString n} hosts carry it (${toString (natsHosts registry)}); a NATS JetStream cluster needs an odd number, 3 or more" ];

  # withFleet: services with every enabled face in the fleet of the
  # registry's NATS cluster (none without fleet-nats hosts); a host's
  # own fleet options win. The tag runs three nodes: the buckets keep
  # three replicas, so losing one node does not stop claiming.
  withFleet = registry: services:
    if natsHosts registry == [ ] then services
    else mapAttrs
      (f: s:
        if faces ? ${f} && (s.enable or false)
        then util.recursiveMerge { fleet = { urls = natsURLs registry; tokenFile = natsTokenFile registry; replicas = 3; }; } s
        else s)
      services;

  # plan: one host's plan.
  plan = registry: name: h:
    let r = profiles.resolve (h.tags or [ ]); in {
      inherit name;
      tags = h.tags or [ ];
      inherit (r) profiles;
      errors =
        map (e: "host ${name}: ${e}") r.errors
        ++ (if builtins.match hostPattern name == null then [ "host ${name}: not a host name (a-z, 0-9, -)" ] else [ ])
        ++ (if h ? address then [ ] else [ "host ${name}: no address" ])
        ++ (if builtins.elem (h.provider or "") providers then [ ] else [ "host ${name}: provider ${toString (h.provider or "(none)")} is not one of ${toString providers}" ]);
      system = h.system or "x86_64-linux";
      provider = h.provider or "generic";
      deployment = {
        targetHost = h.address or null;
        targetUser = h.user or "root";
        tags = h.tags or [ ];
      };
      # the option values of the host's profiles, then its own services
      services = withFleet registry (util.recursiveMerge
        (profiles.values r.profiles (util.recursiveMerge (registry.fleet or { }) (h.fleet or { }))).services or { }
        (h.services or { }));
      modules = concatMap (p: util.optional (profiles.profiles.${p} ? module) profiles.profiles.${p}.module) r.profiles;
    };

  # plans: every host's plan, by name.
  plans = registry: mapAttrs (plan registry) (registry.hosts or { });

  # errors: everything wrong with the registry, all hosts.
  errors = registry: natsErrors registry ++ concatMap (p: p.errors) (builtins.attrValues (plans registry));

  # sopsSecrets: the sops-nix secrets a host's services name (files under
  # /run/secrets/), by secret name.
  sopsSecrets = services:
    let
      walk = v:
        if builtins.isAttrs v then concatMap walk (builtins.attrValues v)
        else if builtins.isString v && builtins.match "/run/secrets/[^/]+" v != null then [ (builtins.baseNameOf v) ]
        else [ ];
    in
    util.unique (walk services);
}
