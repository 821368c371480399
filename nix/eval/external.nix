# The options of the non-nixpkgs modules the fleet hosts import, declared
# with the types their projects give them: sops-nix (modules/sops/
# default.nix) and disko (lib/default.nix, lib/types/{disk,gpt,mdadm,
# mdraid,filesystem}.nix: the device kinds our layouts use).
{ config, lib, ... }:
let
  inherit (lib) types mkOption;
  opt = type: default: mkOption { inherit type default; };
  req = type: mkOption { inherit type; };
  strs = opt (types.listOf types.str) [ ];
  cfg = config.sops;

  # sops-nix modules/sops/default.nix: secretType. The file comes from
  # sops.defaultSopsFile unless set (neither set: the option has no
  # value); a named owner brings that user's group.
  secret = types.submodule ({ name, config, ... }: {
    options = {
      name = opt types.str name;
      key = opt types.str name;
      path = opt types.str (if config.neededForUsers then "/run/secrets-for-users/${config.name}" else "/run/secrets/${config.name}");
      format = opt (types.enum [ "yaml" "json" "binary" "dotenv" "ini" ]) "yaml";
      mode = opt types.str "0400";
      owner = opt (types.nullOr types.str) null;
      uid = opt (types.nullOr types.int) 0;
      group = opt (types.nullOr types.str) (if config.owner != null then outer.users.users.${config.owner}.group else null);
      gid = opt (types.nullOr types.int) 0;
      sopsFile = req types.path;
      sopsFileHash = mkOption { type = types.str; readOnly = true; };
      restartUnits = strs;
      reloadUnits = strs;
      neededForUsers = opt types.bool false;
    };
    config = {
      sopsFile = lib.mkOptionDefault cfg.defaultSopsFile;
      sopsFileHash = lib.mkOptionDefault (lib.optionalString cfg.validateSopsFiles (builtins.hashFile "sha256" config.sopsFile));
    };
  });
  outer = config;

  # sops-nix: the ed25519 host keys of services.openssh.hostKeys, those
  # sops itself deploys left out.
  sshHostKeys = algo:
    if config.services.openssh.enable
    then map (k: k.path) (builtins.filter (k: k.type == algo && !(lib.hasPrefix "/run/secrets" k.path)) config.services.openssh.hostKeys)
    else [ ];

  # disko lib/default.nix: optionTypes.absolute-pathname, a string
  # starting with "/", defined once.
  absolutePath = lib.mkOptionType {
    name = "absolute pathname";
    description = "An absolute path";
    check = x: builtins.isString x && lib.hasPrefix "/" x;
    merge = lib.mergeOneOption;
  };

  # disko lib/default.nix: deviceType / partitionType, a union tagged by
  # `type` (here only the kinds our layouts use).
  tagged = kinds: lib.mkOptionType {
    name = "disko device (${lib.concatStringsSep ", " (builtins.attrNames kinds)})";
    check = v: builtins.isAttrs v && kinds ? ${v.type or ""};
    merge = loc: defs: kinds.${(builtins.head defs).value.type}.merge loc defs;
  };
  # lib/types/mdraid.nix
  mdraid = types.submodule {
    options = {
      type = req (types.enum [ "mdraid" ]);
      name = req types.str;
    };
  };
  # lib/types/mdadm.nix
  mdadm = types.submodule ({ name, ... }: {
    options = {
      name = opt types.str name;
      type = opt (types.enum [ "mdadm" ]) "mdadm";
      level = opt types.int 1;
      metadata = opt (types.enum [ "1" "1.0" "1.1" "1.2" "default" "ddf" "imsm" ]) "default";
      content = opt (types.nullOr (tagged { inherit filesystem; })) null;
      extraArgs = strs;
    };
  });
  # lib/types/filesystem.nix
  filesystem = types.submodule {
    options = {
      type = req (types.enum [ "filesystem" ]);
      format = req types.str;
      mountpoint = opt (types.nullOr absolutePath) null;
      mountOptions = opt (types.listOf types.str) [ "defaults" ];
      extraArgs = strs;
    };
  };
  # lib/types/gpt.nix: a partition's type is an sgdisk short code or a
  # full GUID; 100% partitions go last, BIOS boot (EF02) first.
  hex = n: "[A-Fa-f0-9]{${toString n}}";
  partition = types.submodule ({ name, config, ... }: {
    options = {
      name = opt types.str name;
      size = opt (types.either (types.enum [ "100%" ]) (types.strMatching "[0-9]+[KMGTP]?")) "0";
      type = opt (types.either (types.strMatching (hex 4)) (types.strMatching (lib.concatMapStringsSep "-" hex [ 8 4 4 4 12 ]))) "8300";
      priority = opt types.int (if config.size == "100%" then 9001 else if config.type == "EF02" then 100 else 1000);
      content = opt (types.nullOr (tagged { inherit filesystem mdraid; })) null;
    };
  });
  gpt = types.submodule {
    options = {
      type = req (types.enum [ "gpt" ]);
      partitions = opt (types.attrsOf partition) { };
    };
  };
  # lib/types/disk.nix
  disk = types.submodule ({ name, config, ... }: {
    options = {
      name = opt types.str (lib.replaceStrings [ "/" ] [ "_" ] name);
      type = opt (types.enum [ "disk" ]) "disk";
      device = req absolutePath;
      imageSize = opt (types.strMatching "[0-9]+[KMGTP]?") "2G";
      content = opt (types.nullOr (tagged { inherit gpt; })) null;
    };
  });
in
{
  options = {
    sops = {
      defaultSopsFile = req types.path;
      validateSopsFiles = opt types.bool true;
      age.sshKeyPaths = opt (types.listOf types.path) (sshHostKeys "ed25519");
      secrets = opt (types.attrsOf secret) { };
    };
    # disko lib/default.nix: toplevel
    disko.devices.disk = opt (types.attrsOf disk) { };
    disko.devices.mdadm = opt (types.attrsOf mdadm) { };
  };
}
