# A qcow2 host image for any KVM cloud or hypervisor: NixOS with the
# fireactions modules, cloud-init for the first boot's network and SSH
# keys, no orchestrator enabled (tags decide that after deploy).
{ config, lib, pkgs, modulesPath, ... }:
{
  imports = [ "${modulesPath}/profiles/qemu-guest.nix" ];
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; autoResize = true; };
  boot.growPartition = true;
  boot.loader.grub.device = "/dev/vda";
  boot.kernelParams = [ "console=ttyS0" ];
  services.cloud-init = { enable = true; network.enable = true; };
  services.openssh.enable = true;
  services.microvm-base.enable = true; # KVM, kernel and sysctls ready
  system.stateVersion = "25.05";

  system.build.fireactionsImage = import "${modulesPath}/../lib/make-disk-image.nix" {
    inherit config lib pkgs;
    name = "fireactions-host-qcow2";
    format = "qcow2-compressed";
    partitionTableType = "legacy+gpt";
    diskSize = "auto";
    additionalSpace = "2G";
  };
}
