# security-hardened: the NixOS side (guest network limits, SMT and module
# locking are services.microvm-base.security options, set in
# nix/lib/profiles.nix).
{ lib, ... }:
{
  services.openssh.settings = {
    PasswordAuthentication = false;
    KbdInteractiveAuthentication = false;
    PermitRootLogin = lib.mkForce "prohibit-password";
    X11Forwarding = false;
    AllowAgentForwarding = false;
    AllowTcpForwarding = false;
  };
  security.sudo.execWheelOnly = true;
  security.protectKernelImage = true;
  boot.kernelParams = [ "slab_nomerge" "init_on_alloc=1" "init_on_free=1" "page_alloc.shuffle=1" ];
  boot.blacklistedKernelModules = [ "dccp" "sctp" "rds" "tipc" ];
  networking.firewall.enable = true;
  nix.settings.allowed-users = [ "root" ];
}
