# All five modules; each is inert until enabled.
{ defaultPackages ? null }:
let pkgFor = face: if defaultPackages == null then null else (pkgs: defaultPackages pkgs face);
in
{
  imports = [
    ./microvm-base.nix
    ./registry-cache.nix
    (import ./fireactions.nix { defaultPackage = pkgFor "fireactions"; })
    (import ./fireteact.nix { defaultPackage = pkgFor "fireteact"; })
    (import ./fireglab.nix { defaultPackage = pkgFor "fireglab"; })
  ];
}
