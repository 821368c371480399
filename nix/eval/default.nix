# Evaluates NixOS configurations made of our modules with nixpkgs' own
# module system (nix/eval/lib.nix), the NixOS options they set declared
# with nixpkgs' types (nixos.nix, external.nix) and packages as
# derivation-shaped values (pkgs.nix). `make nix-check` drives it:
#
#   (import ./nix/eval { }).nixos [ module ... ]   -> { config; options; }
#
# No build happens: store paths are computed, not made.
{ system ? "x86_64-linux" }:
let
  lib = import ./lib.nix;
  pkgs = import ./pkgs.nix { inherit system; };
  # The faces' own package, as the flake passes it (self.packages).
  facePackage = face: _pkgs: {
    type = "derivation";
    name = face;
    pname = face;
    version = "0";
    outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" face)}-${face}";
  };
  ours = {
    microvm-base = ../modules/microvm-base.nix;
    registry-cache = ../modules/registry-cache.nix;
    fireactions = import ../modules/fireactions.nix { defaultPackage = facePackage "fireactions"; };
    fireteact = import ../modules/fireteact.nix { defaultPackage = facePackage "fireteact"; };
    fireglab = import ../modules/fireglab.nix { defaultPackage = facePackage "fireglab"; };
    default = import ../modules { defaultPackages = pkgs: face: facePackage face pkgs; };
  };
in
rec {
  inherit lib pkgs;
  modules = ours;

  # nixos: the evaluation of a NixOS configuration of these modules.
  nixos = modules: lib.evalModules {
    modules = [
      ./nixos.nix
      ./external.nix
      { _module.args.pkgs = pkgs; system.stateVersion = lib.mkDefault "25.05"; }
    ] ++ modules;
  };

  # failedAssertions: the messages of a configuration's false assertions
  # (NixOS refuses to build such a system).
  failedAssertions = config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);

  # unit: what a face's systemd unit is, as the checks read it.
  unit = config: face:
    let s = config.systemd.services.${face}; in
    {
      inherit (s) serviceConfig wantedBy after wants;
      path = map toString s.path;
      inherit (s) enableDefaultPath;
      # The configuration file the unit runs with, as the binary reads it
      # (the checked copy's input when checkConfig is on).
      settings =
        let file = builtins.head s.restartTriggers; in
        builtins.fromJSON (file.config or file).text;
    };
}
