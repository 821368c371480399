# An Azure host image (fixed-size VHD): NixOS with the fireactions modules
# and Azure's agent settings; nested virtualisation needs a VM size that
# offers it (Dv3, Ev3 and later).
#
# The image is nixpkgs' own (nixos/modules/virtualisation/azure-image.nix),
# so its partition table and boot loader always agree: Generation 2 (UEFI)
# gives a GPT with an ESP ("efi") and GRUB with efiSupport installed as
# the removable EFI loader; Generation 1 would give an MBR ("legacy") and
# GRUB on /dev/sda. Gen 2 is what Azure creates by default, and newer VM
# sizes take only Gen 2 images. Create the VM with the "Standard" security
# type: secure boot must be off (nixpkgs' vmGeneration description).
{ config, lib, modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/azure-image.nix" ];
  virtualisation.azureImage.vmGeneration = lib.mkDefault "v2";
  services.microvm-base.enable = true;
  services.openssh.enable = true;
  system.stateVersion = "25.05"; # a released NixOS, whatever the channel

  # The VHD (…/*.vhd, fixed size, whole MiB) of nixpkgs' module.
  system.build.fireactionsImage = config.system.build.azureImage;
}
