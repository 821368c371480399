# The packages the modules take from pkgs, as derivation-shaped values
# (type "derivation", an outPath under /nix/store), so the module system
# type-checks them as packages and the rendered units name store paths.
# Nothing else is here: a module reaching for a package not listed fails
# with "attribute ... missing", which is the point. Each name is the
# nixpkgs attribute (pkgs/by-name or pkgs/top-level/all-packages.nix).
{ system ? "x86_64-linux" }:
let
  hash = name: builtins.substring 0 32 (builtins.hashString "sha256" name);
  drv = name: extra: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/${hash name}-${name}";
    drvPath = "/nix/store/${hash name}-${name}.drv";
    outputs = [ "out" ];
  } // extra;
  pkg = name: drv name { pname = name; version = "0"; meta.mainProgram = name; };
  arch = builtins.head (builtins.split "-" system);
in
{
  stdenv.hostPlatform = { inherit system; qemuArch = arch; isx86_64 = arch == "x86_64"; isAarch64 = arch == "aarch64"; };

  # Builders: what they would build is forced, as a build would.
  writeText = name: text: builtins.seq (builtins.stringLength text) (drv name { inherit text; });
  runCommand = name: env: script: builtins.seq (builtins.stringLength script) (drv name (env // { inherit script; }));
  writeShellScript = name: text: builtins.seq (builtins.stringLength text) (drv name { inherit text; });
  # callPackage of one of our own package files: a derivation recording
  # the file and the arguments it was given.
  callPackage = file: args: drv (baseNameOf (toString file)) { inherit file args; pname = baseNameOf (toString file); version = "0"; };
  formats.json = { }: rec {
    # pkgs-lib/formats.nix: json's value type.
    type = let lib = import ./lib.nix; t = lib.types; valueType = t.nullOr (t.oneOf [ t.bool t.int t.float t.str t.path (t.attrsOf valueType) (t.listOf valueType) ]); in valueType;
    generate = name: value: drv name { text = builtins.toJSON value; };
  };

  qemu_kvm = pkg "qemu";
  firecracker = pkg "firecracker"; # bin/firecracker and bin/jailer
  nftables = pkg "nftables";
  iproute2 = pkg "iproute2";
  e2fsprogs = pkg "e2fsprogs"; # mkfs.ext4
  erofs-utils = pkg "erofs-utils"; # mkfs.erofs
  util-linux = pkg "util-linux";
  coreutils = pkg "coreutils";
  openssl = pkg "openssl";
  zot = pkg "zot";
  squid = pkg "squid";
  jq = pkg "jq";
  nats-server = pkg "nats-server";
  tcpdump = pkg "tcpdump";
  gitea-actions-runner = pkg "gitea-actions-runner"; # act_runner
  forgejo-runner = pkg "forgejo-runner";
  gitlab-runner = pkg "gitlab-runner";
  github-runner = pkg "github-runner";
}
