# The orchestrator and the guest agent, built from this repository.
#
# buildGo126Module, not buildGoModule: go.mod says `go 1.26.8`, and
# buildGoModule sets GOTOOLCHAIN=local, so only nixpkgs' go_1_26 (1.26.8)
# builds it; the default Go of a channel may be older. The flake passes
# pkgs.buildGo126Module under this name.
{ lib, buildGo126Module, version ? "dev", src }:
let
  buildGoModule = buildGo126Module;
in
buildGoModule {
  pname = "fireactions";
  inherit version src;
  # The NAR hash of `go mod vendor` for go.mod/go.sum, computed by
  # scripts/vendor-hash.sh; nix/nixcheck/hash_test.go fails when go.sum
  # changes without it (`scripts/vendor-hash.sh` prints the new one).
  vendorHash = "sha256-XNV8XWkyNVdctHMiJhbQfqlbYzIGC5bZeSmTGRhc7KY=";
  subPackages = [ "cmd/fireactions" "cmd/fireactions-agent" ];
  env.CGO_ENABLED = 0;
  ldflags = [ "-s" "-w" "-X github.com/nixos-fireactions/nixos-fireactions/cli.Version=${version}" ];
  # The unit tests need root, QEMU and network namespaces; `make unit`
  # runs them.
  doCheck = false;
  meta = {
    description = "CI jobs of GitHub, Gitea/Forgejo and GitLab, each in an ephemeral microVM";
    mainProgram = "fireactions";
    platforms = lib.platforms.linux;
  };
}
