# What every host of the fleet has, whatever its tags.
{ lib, registry, ... }:
let keys = registry.fleet.adminKeys or [ ]; in
{
  services.openssh.enable = true;
  users.users.root.openssh.authorizedKeys.keys = keys;
  warnings = lib.optional (keys == [ ])
    "hosts/registry.json has no fleet.adminKeys: nobody can log in over SSH (deploy/deploy.sh --admin-key adds one)";
  networking.firewall.enable = true;
  nix.settings.experimental-features = [ "nix-command" "flakes" ];
  # Secrets: sops-nix decrypts secrets/<host>.yaml with the host's SSH key
  # into /run/secrets/NAME (root, 0400); the orchestrator units get them as
  # systemd credentials.
  sops.age.sshKeyPaths = [ "/etc/ssh/ssh_host_ed25519_key" ];
  system.stateVersion = "25.05";
}
