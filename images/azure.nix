# An Azure host image (fixed-size VHD): NixOS with the fireactions modules
# and Azure's agent settings; nested virtualisation needs a VM size that
# offers it (Dv3, Ev3 and later).
{ config, lib, pkgs, modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/azure-common.nix" ];
  services.microvm-base.enable = true;
  services.openssh.enable = true;
  system.stateVersion = "25.05";

  system.build.fireactionsImage = import "${modulesPath}/../lib/make-disk-image.nix" {
    inherit config lib pkgs;
    name = "fireactions-host-azure";
    format = "raw";
    partitionTableType = "efi";
    diskSize = "auto";
    additionalSpace = "2G";
    # Azure takes fixed VHDs whose size is a whole number of MiB.
    postVM = ''
      ${pkgs.vmTools.qemu}/bin/qemu-img convert -f raw -o subformat=fixed,force_size -O vpc $diskImage $out/disk.vhd
      rm $diskImage
    '';
  };
}
