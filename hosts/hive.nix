# The fleet of hosts/registry.json, for Colmena (flake output colmena) and
# nixos-anywhere (flake output nixosConfigurations). Which profiles a host
# gets and what they set is computed by nix/lib/hive.nix, in plain Nix
# (checked by `make nix-check`); this file only wires it into NixOS.
{ self, nixpkgs, disko, sops-nix }:
let
  lib = nixpkgs.lib;
  registry = builtins.fromJSON (builtins.readFile ./registry.json);
  plans = self.lib.hive.plans registry;
  errors = self.lib.hive.errors registry;
  secrets = import ./secrets.nix { inherit (self.lib) hive; };
  checked = if errors == [ ] then plans else throw "hosts/registry.json:\n${lib.concatStringsSep "\n" errors}";

  # nodeModule: a host's NixOS configuration.
  nodeModule = p: {
    imports = [
      self.nixosModules.default
      disko.nixosModules.disko
      sops-nix.nixosModules.sops
      ../deploy/disko/${p.provider}.nix
      ./common.nix
    ]
    ++ map (m: ../nix/profiles/${m}) p.modules
    ++ lib.optional (builtins.pathExists ./${p.name}/hardware.nix) ./${p.name}/hardware.nix;
    _module.args.registry = registry;
    networking.hostName = p.name;
    nixpkgs.hostPlatform = p.system;
    # Defaults: a host's own modules may override any of them.
    services = lib.mapAttrsRecursive (_: lib.mkDefault) p.services;
  }
  # sops-nix: secrets/<host>.yaml (encrypted for the host's key, see
  # .sops.yaml) holds every /run/secrets/NAME its services name; each
  # restarts the units that read it (hosts/secrets.nix).
  // secrets.module { inherit (p) name services; file = ../secrets/${p.name}.yaml; };
in
{
  nixosConfigurations = lib.mapAttrs (_: p: nixpkgs.lib.nixosSystem { modules = [ (nodeModule p) ]; }) checked;

  colmena = {
    meta = {
      nixpkgs = import nixpkgs { system = "x86_64-linux"; };
      description = "nixos-fireactions fleet (hosts/registry.json)";
      allowApplyAll = false; # pick hosts: --on @prod, --on gh-runner-1
    };
  } // lib.mapAttrs (_: p: { imports = [ (nodeModule p) ]; deployment = p.deployment; }) checked;
}
