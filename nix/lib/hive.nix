# The fleet: hosts/registry.json (hosts, their tags, the fleet's forge
# data) turned into a plan per host, from which hosts/hive.nix makes the
# Colmena nodes and the checks make configuration files.
{ profiles, util }:
let
  inherit (builtins) mapAttrs attrNames concatMap;
  hostPattern = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
  providers = [ "do" "hetzner" "generic" "bare-metal" ];
in
rec {
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
      services = util.recursiveMerge
        (profiles.values r.profiles (util.recursiveMerge (registry.fleet or { }) (h.fleet or { }))).services or { }
        (h.services or { });
      modules = concatMap (p: util.optional (profiles.profiles.${p} ? module) profiles.profiles.${p}.module) r.profiles;
    };

  # plans: every host's plan, by name.
  plans = registry: mapAttrs (plan registry) (registry.hosts or { });

  # errors: everything wrong with the registry, all hosts.
  errors = registry: concatMap (p: p.errors) (builtins.attrValues (plans registry));

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
