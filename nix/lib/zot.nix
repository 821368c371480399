# Zot's configuration for the registry cache: pull-through mirrors on
# demand, anonymous read only (guests can pull, nobody can push: a job
# cannot poison the cache for the next one), garbage collection.
{ util }:
{
  # config: Zot's config.json as an attribute set.
  #   address, port     where it listens
  #   rootDirectory     storage
  #   mirrors           { name = { url; }; } (registry-cache.mirrors)
  #   credentialsFile   upstream credentials inside the unit, or null
  #   gcInterval        Zot duration
  config = { address, port, rootDirectory, mirrors, credentialsFile, gcInterval, settings ? { } }:
    util.recursiveMerge
      {
        distSpecVersion = "1.1.0";
        storage = {
          inherit rootDirectory gcInterval;
          gc = true;
          dedupe = true;
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
              content = [{ prefix = "**"; destination = "/${name}"; }];
            })
            (builtins.attrNames mirrors);
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
