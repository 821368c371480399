# `import nixpkgs { system; }` as the flake's consumers write it: the
# stand-in packages of pkgs.nix.
{ system ? "x86_64-linux", ... }:
import ./pkgs.nix { inherit system; }
