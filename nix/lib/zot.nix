# Zot's configuration for the registry cache: pull-through mirrors on
# demand, anonymous read only (guests can pull, nobody can push: a job
# cannot poison the cache for the next one), retention by last pull and
# garbage collection.
#
# Layout: each mirrored registry lives under /<name> (ghcr.io/org/app is
# served as <cache>/v2/ghcr.io/org/app), except rootRegistry (docker.io
# by default), served at the root: Docker's registry-mirrors can only
# mirror Docker Hub, and only from a mirror's root. Prefixed registries
# come first: Zot tries them in order, and the root one would claim every
# name.
{ util }:
let
  inherit (builtins) attrNames filter;
in
rec {
  # prefixOf: the repository prefix a registry's images have in the
  # cache ("" at the root).
  prefixOf = rootRegistry: name: if name == rootRegistry then "" else name;

  # registryOrder: the registries, prefixed ones first, the root one last.
  registryOrder = rootRegistry: mirrors:
    filter (n: n != rootRegistry) (attrNames mirrors) ++ filter (n: n == rootRegistry) (attrNames mirrors);

  # config: Zot's config.json as an attribute set.
  #   address, port     where it listens
  #   rootDirectory     storage
  #   mirrors           { name = { url; }; } (registry-cache.mirrors)
  #   rootRegistry      the mirror served at the root, or null
  #   credentialsFile   upstream credentials inside the unit, or null
  #   gcInterval        Zot duration
  #   keepPulledWithin  tags not pulled for this long are removed (Zot
  #                     duration), then their blobs collected
  config = { address, port, rootDirectory, mirrors, credentialsFile, gcInterval, keepPulledWithin, rootRegistry ? "docker.io", settings ? { } }:
    util.recursiveMerge
      {
        distSpecVersion = "1.1.0";
        storage = {
          inherit rootDirectory gcInterval;
          gc = true;
          dedupe = true;
          retention = {
            delay = "24h";
            policies = [{
              repositories = [ "**" ];
              deleteUntagged = true;
              deleteReferrers = true;
              keepTags = [{ pulledWithin = keepPulledWithin; }];
            }];
          };
        };
        http = {
          inherit address;
          port = toString port;
          # Anonymous clients may read; no policy grants create, update or
          # delete, so pushes are refused.
          accessControl.repositories."**" = {
            anonymousPolicy = [ "read" ];
            defaultPolicy = [ ];
          };
        };
        log.level = "info";
        extensions.sync = util.filterNulls {
          enable = true;
          inherit credentialsFile;
          registries = map
            (name: {
              urls = [ mirrors.${name}.url ];
              onDemand = true;
              tlsVerify = true;
              content = [{ prefix = "**"; destination = "/${prefixOf rootRegistry name}"; }];
            })
            (registryOrder rootRegistry mirrors);
        };
      }
      settings;

  # pushAllowed: whether any access policy of a rendered config lets
  # anyone write (the checks assert it does not).
  pushAllowed = cfg:
    let
      policies = builtins.attrValues (cfg.http.accessControl.repositories or { });
      writes = [ "create" "update" "delete" ];
      grants = p: builtins.any (a: builtins.elem a writes) ((p.anonymousPolicy or [ ]) ++ (p.defaultPolicy or [ ]) ++ builtins.concatMap (x: x.actions or [ ]) (p.policies or [ ]));
    in
    !(cfg.http ? accessControl) || builtins.any grants policies;
}
