# sops-nix for one host, in plain Nix (builtins only, so that
# nix/nixcheck evaluates it with nix-instantiate): which secrets
# secrets/<host>.yaml must hold, and which units restart when one changes.
#
# Every enabled service of a host's plan (nix/lib/hive.nix plan.services)
# runs as the unit of its own name: services.fireactions is
# fireactions.service (nix/lib/faces.nix unit), services.registry-cache
# is registry-cache.service. A unit copies the /run/secrets files it
# names at start (LoadCredential), so a changed secret means a restart:
# sops-nix's sops.secrets.<name>.restartUnits (listOf str, Mic92/sops-nix
# modules/sops/default.nix).
{ hive }:
rec {
  # restartUnits: secret name -> the units of the enabled services that
  # name /run/secrets/<name>; a secret only disabled services name gets [ ].
  restartUnits = services:
    let
      enabled = builtins.filter (s: builtins.isAttrs services.${s} && (services.${s}.enable or false) == true)
        (builtins.attrNames services);
      users = builtins.concatMap
        (s: map (secret: { inherit secret; unit = "${s}.service"; }) (hive.sopsSecrets { ${s} = services.${s}; }))
        enabled;
    in
    builtins.listToAttrs (map
      (secret: {
        name = secret;
        value = map (u: u.unit) (builtins.filter (u: u.secret == secret) users);
      })
      (hive.sopsSecrets services));

  # module: the sops part of a host's NixOS configuration; file is
  # secrets/<host>.yaml, which may not exist (the example hosts have none).
  module = { name, services, file }:
    if builtins.pathExists file then {
      sops.defaultSopsFile = file;
      sops.secrets = builtins.mapAttrs (_: units: { restartUnits = units; }) (restartUnits services);
    } else {
      warnings = [ "secrets/${name}.yaml does not exist: the services' /run/secrets files will be missing" ];
    };
}
