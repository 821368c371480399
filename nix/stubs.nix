# Stand-ins for the few parts of nixpkgs' lib and pkgs the modules use, so
# that `make nix-check` can evaluate the modules' bodies (their wiring:
# units, credentials, assertions, the bridges' registry) without nixpkgs.
# This is not the module system: option merging, types and priorities are
# not modelled; mkIf and mkMerge are resolved plainly by `resolve`.
let
  util = import ./lib/util.nix;
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  drv = name: { outPath = store name; inherit name; type = "derivation"; };
in
rec {
  lib = rec {
    types = {
      bool = "bool";
      str = "str";
      int = "int";
      port = "port";
      package = "package";
      strMatching = re: { strMatching = re; };
      enum = l: { enum = l; };
      nullOr = t: { nullOr = t; };
      listOf = t: { listOf = t; };
      attrsOf = t: { attrsOf = t; };
      submodule = m: { submodule = m; };
    };
    mkOption = o: o // { _isOption = true; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
    mkForce = content: { _type = "override"; priority = 50; inherit content; };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: l: if c then l else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: s: if c then s else { };
    mapAttrs = builtins.mapAttrs;
    concatStringsSep = builtins.concatStringsSep;
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    removePrefix = p: s:
      let n = builtins.stringLength p; in
      if builtins.substring 0 n s == p then builtins.substring n (builtins.stringLength s - n) s else s;
    filterAttrs = pred: set: builtins.listToAttrs (builtins.filter (x: pred x.name x.value) (map (n: { name = n; value = set.${n}; }) (builtins.attrNames set)));
    mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
    mapAttrsToList = f: set: map (n: f n set.${n}) (builtins.attrNames set);
    concatStrings = builtins.concatStringsSep "";
    # nixosSystem keeps its modules, for a test to look at.
    nixosSystem = args: args // { config.system.build = { toplevel = store "nixos-system"; fireactionsImage = store "image"; }; pkgs = pkgs; };
    mapAttrsRecursive = f: set:
      let recurse = path: builtins.mapAttrs (k: v: if builtins.isAttrs v then recurse (path ++ [ k ]) v else f (path ++ [ k ]) v);
      in recurse [ ] set;
  };

  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    callPackage = fn: args: drv "callPackage" // { inherit args; version = "dev"; };
    mkShell = args: drv "shell";
    formats.json = { }: { type = "json"; };
    # Both force their text: a file's content is evaluated, as a build would.
    writeText = name: text: builtins.seq (builtins.stringLength text) (store name);
    runCommand = name: env: script: builtins.seq (builtins.stringLength script) (store name);
    nftables = drv "nftables";
    iproute2 = drv "iproute2";
    qemu_kvm = drv "qemu";
    zot = drv "zot";
    squid = drv "squid";
    openssl = drv "openssl";
    coreutils = drv "coreutils";
    linuxPackages.kernel = drv "linux" // { modDirVersion = "6.12.8"; };
  };

  package = face: drv face;

  # flake: flake.nix's outputs, with these stand-ins as its inputs.
  flake =
    let
      nixpkgs = {
        inherit lib;
        legacyPackages = { x86_64-linux = pkgs; aarch64-linux = pkgs // { stdenv.hostPlatform.system = "aarch64-linux"; }; };
      };
      self = (import ../flake.nix).outputs {
        inherit self nixpkgs;
        disko.nixosModules.disko = { };
        sops-nix.nixosModules.sops = { };
        colmena = { lib.makeHive = hive: hive; packages = builtins.mapAttrs (_: _: { colmena = drv "colmena"; }) nixpkgs.legacyPackages; };
      } // { outPath = toString ./..; };
    in
    self;

  # resolve: a module's config with mkIf, mkMerge and overrides applied
  # plainly (later definitions win; lists concatenate).
  resolve = v:
    if builtins.isAttrs v && (v._type or null) == "if" then (if v.condition then resolve v.content else { })
    else if builtins.isAttrs v && (v._type or null) == "merge" then builtins.foldl' merge { } (map resolve v.contents)
    else if builtins.isAttrs v && (v._type or null) == "override" then resolve v.content
    else if builtins.isAttrs v && !(v ? outPath) then builtins.mapAttrs (_: resolve) v
    else v;

  merge = a: b:
    a // builtins.mapAttrs
      (k: v:
        if builtins.isAttrs v && builtins.isAttrs (a.${k} or null) then merge a.${k} v
        else if builtins.isList v && builtins.isList (a.${k} or null) then a.${k} ++ v
        else v)
      b;

  # optionNames: the option tree a module declares, as names only.
  optionNames = o:
    if builtins.isAttrs o && o ? _isOption then
      (if builtins.isAttrs o.type && o.type ? attrsOf && builtins.isAttrs o.type.attrsOf && o.type.attrsOf ? submodule
      then { "<name>" = builtins.mapAttrs (_: optionNames) o.type.attrsOf.submodule.options; } else true)
    else builtins.mapAttrs (_: optionNames) o;

  inherit util;
}
