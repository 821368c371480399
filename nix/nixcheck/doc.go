// Package nixcheck checks the NixOS layer without nixpkgs: its tests
// (build tag nixcheck, run by `make nix-check`) parse every .nix file,
// evaluate the plain-Nix functions of nix/lib with nix-instantiate, feed
// each configuration they render to `fireactions validate --offline`,
// keep docs/nixos.md in step with the modules' options, and run
// deploy/deploy.sh against stub nix and ssh commands.
//
// The package itself renders the generated parts of docs/nixos.md.
package nixcheck
