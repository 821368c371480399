# Profiles by tag. A host's tags (hosts/registry.json) name profiles; a
# profile may imply others. Each profile is option values in plain Nix
# (values, a function of the fleet's forge data) plus, for what has no
# option of ours, a NixOS module file under nix/profiles/.
{ faces, sizes, util }:
let
  inherit (builtins) attrNames listToAttrs concatMap filter elem length sort lessThan;
  faceNames = attrNames faces;
  sizeNames = attrNames sizes;

  forAllFaces = v: listToAttrs (map (n: { name = n; value = v; }) faceNames);

  workload = face:
    let f = faces.${face}; in {
      name = f.workload;
      value = {
        kind = "workload";
        inherit face;
        description = "Runs ${face} for ${f.description}, with the fleet's forge and scope for it and a pool named default.";
        values = fleet:
          let fl = fleet.${face} or { }; in {
            services.${face} = {
              enable = true;
              forges = fl.forges or { };
              pools.default = fl.pool or { };
            };
          };
      };
    };

  size = face: s: {
    name = "${face}-${s}";
    value = {
      kind = "size";
      inherit face;
      size = s;
      implies = [ faces.${face}.workload ];
      description = "${faces.${face}.workload} with the default pool sized ${s} (${toString sizes.${s}.memory_mib} MiB, ${toString sizes.${s}.vcpus} vCPU, at most ${toString sizes.${s}.max} VMs).";
      values = _: { services.${face}.pools.default.size = s; };
    };
  };
in
rec {
  profiles = listToAttrs (map workload faceNames)
    // listToAttrs (concatMap (f: map (size f) sizeNames) faceNames)
    // {
    fleet-nats = {
      kind = "role";
      description = "Runs one node of the fleet's NATS JetStream cluster (services.nats), routed to the other hosts that carry this tag; every host's orchestrators join the fleet through it.";
      module = "fleet-nats.nix";
      values = _: { };
    };
    registry-cache = {
      kind = "role";
      description = "An OCI pull-through cache for the guests on this host (services.registry-cache).";
      values = _: { services.registry-cache.enable = true; };
    };
    prod = {
      kind = "env";
      description = "Production: info logs, a long drain so deploys let jobs finish, SSH by key only, automatic Nix store GC.";
      module = "prod.nix";
      values = _: { services = forAllFaces { settings = { log.level = "info"; drain_grace = "30m"; }; }; };
    };
    dev = {
      kind = "env";
      description = "Development: debug logs, console logs of failed VMs kept a week.";
      module = "dev.nix";
      values = _: { services = forAllFaces { settings = { log.level = "debug"; console_logs.keep = "168h"; }; }; };
    };
    security-hardened = {
      kind = "hardening";
      description = "Guests cannot reach private networks and have a connection rate limit; SMT off; no module loading after boot; a locked-down host.";
      module = "security-hardened.nix";
      values = _: {
        services.microvm-base.security = {
          blockPrivateNetworks = true;
          newConnectionsPerSecond = 50;
          disableSMT = true;
          lockKernelModules = true;
        };
      };
    };
  };

  # resolve: the profiles a list of tags selects (implied ones included,
  # sorted) and what is wrong with the tags.
  resolve = tags:
    let
      close = names:
        let more = util.unique (names ++ concatMap (n: profiles.${n}.implies or [ ]) names);
        in if length more == length names then names else close more;
      unknown = filter (t: !(profiles ? ${t})) tags;
      known = sort lessThan (close (filter (t: profiles ? ${t}) tags));
      ofKind = k: filter (n: profiles.${n}.kind == k) known;
      sizesOf = face: filter (n: (profiles.${n}.face or null) == face) (ofKind "size");
    in
    {
      profiles = known;
      errors =
        map (t: "unknown tag ${t} (known: ${toString (attrNames profiles)})") unknown
        ++ (if length (ofKind "env") > 1 then [ "tags ${toString (ofKind "env")} exclude each other" ] else [ ])
        ++ concatMap (f: if length (sizesOf f) > 1 then [ "tags ${toString (sizesOf f)} give ${f} more than one size" ] else [ ]) faceNames;
    };

  # values: the option values of a set of profiles, in a fixed order
  # (workloads, then sizes and roles, then environments, then hardening),
  # later ones winning.
  values = names: fleet:
    let
      rank = { workload = 0; size = 1; role = 1; env = 2; hardening = 3; };
      ordered = sort (a: b: rank.${profiles.${a}.kind} < rank.${profiles.${b}.kind} || (rank.${profiles.${a}.kind} == rank.${profiles.${b}.kind} && lessThan a b)) names;
    in
    builtins.foldl' (acc: n: util.recursiveMerge acc (profiles.${n}.values fleet)) { } ordered;
}
