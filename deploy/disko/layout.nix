# The single-disk layout the cloud providers share: GPT, a 1 MiB BIOS boot
# partition (GRUB on BIOS), a 512 MiB EFI system partition (UEFI), ext4
# root on the rest. GRUB is installed for both.
{ lib, device }:
{
  disko.devices.disk.main = {
    type = "disk";
    inherit device;
    content = {
      type = "gpt";
      partitions = {
        boot = { size = "1M"; type = "EF02"; };
        ESP = {
          size = "512M";
          type = "EF00";
          content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; mountOptions = [ "umask=0077" ]; };
        };
        root = {
          size = "100%";
          content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; };
        };
      };
    };
  };
  boot.loader.grub = {
    enable = true;
    efiSupport = true;
    efiInstallAsRemovable = true;
  };
  boot.initrd.availableKernelModules = lib.mkDefault [ "virtio_pci" "virtio_scsi" "virtio_blk" "ahci" "sd_mod" "nvme" ];
}
