# prod: the NixOS side (the orchestrators' side is in nix/lib/profiles.nix).
{ lib, ... }:
{
  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };
  nix.gc = {
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 14d";
  };
  nix.settings.auto-optimise-store = true;
  # Deploys replace the system; jobs finish first (drain_grace).
  system.autoUpgrade.enable = lib.mkDefault false;
  services.journald.extraConfig = "SystemMaxUse=2G";
}
