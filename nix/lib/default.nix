# The plain-Nix layer of the NixOS modules: builtins only, no nixpkgs, so
# that `nix-instantiate --eval` checks it on any machine with Nix (see
# nix/nixcheck). The modules under nix/modules are thin wrappers around it.
let
  util = import ./util.nix;
  faces = import ./faces.nix;
  sizes = import ./sizes.nix;
  spec = import ./spec.nix { inherit util; };
  options = import ./options.nix { inherit faces sizes spec; };
  presets = import ./presets.nix { inherit faces sizes util; };
  settings = import ./settings.nix { inherit faces presets util registrycache; };
  profiles = import ./profiles.nix { inherit faces sizes util; };
  hive = import ./hive.nix { inherit profiles util faces; };
  zot = import ./zot.nix { inherit util; };
  squid = import ./squid.nix { inherit util; };
  registrycache = import ./registrycache.nix { inherit util zot squid; };
  microvm = import ./microvm.nix { inherit util; };
  sandbox = import ./sandbox.nix;
in
{
  inherit util faces sizes spec options presets settings profiles hive zot squid registrycache microvm sandbox;
}
