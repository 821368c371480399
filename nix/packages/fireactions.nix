# The orchestrator and the guest agent, built from this repository.
{ lib, buildGoModule, version ? "dev", src }:
buildGoModule {
  pname = "fireactions";
  inherit version src;
  # Not computable on a machine without nixpkgs: the first `nix build
  # .#fireactions` fails and prints the real hash ("got: sha256-..."); put
  # it here.
  vendorHash = lib.fakeHash;
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
