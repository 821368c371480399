# Profiles by tag as NixOS modules: the plain option values of
# nix/lib/profiles.nix (as defaults, so a host can override them) plus the
# profile's NixOS-only file, if it has one. Standalone, a workload profile
# only enables its face: forges and scopes come from the host (or, in the
# hive, from hosts/registry.json's fleet data).
let
  l = import ../lib;
in
builtins.mapAttrs
  (name: p: { lib, ... }: {
    imports = if p ? module then [ (./. + "/${p.module}") ] else [ ];
    config = lib.mapAttrsRecursive (_: lib.mkDefault) (p.values { });
  })
  l.profiles.profiles
