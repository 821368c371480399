# nixpkgs' lib (the module system: evalModules, types, mkIf, priorities),
# from the first of: $NIXPKGS_LIB, ../shared/nixpkgs-lib/lib beside the
# repository (a snapshot of nixpkgs' lib/, see its README), <nixpkgs/lib>.
# `make nix-check` evaluates every module through it; nothing here stands
# in for the module system.
let
  fromEnv = builtins.getEnv "NIXPKGS_LIB";
  shared = ../../../shared/nixpkgs-lib/lib;
  fromNixPath = builtins.tryEval (builtins.findFile builtins.nixPath "nixpkgs/lib");
  where =
    if fromEnv != "" then fromEnv
    else if builtins.pathExists shared then shared
    else if fromNixPath.success then fromNixPath.value
    else throw "nixpkgs' lib not found: set NIXPKGS_LIB to a nixpkgs lib/ directory, put a snapshot at ../shared/nixpkgs-lib/lib, or put nixpkgs on NIX_PATH";
in
import where
