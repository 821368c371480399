# dev: the NixOS side (the orchestrators' side is in nix/lib/profiles.nix).
{ pkgs, ... }:
{
  services.openssh.enable = true;
  environment.systemPackages = with pkgs; [ jq tcpdump nftables qemu_kvm ];
}
