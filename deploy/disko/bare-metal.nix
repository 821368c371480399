# Disk layout for bare metal: two NVMe disks in RAID 1 (mdadm), EFI boot
# from the first; the orchestrators' state (VM disks, logs) on the array.
# (disko's option names: nix-community/disko lib/types/{disk,gpt,mdadm,
# mdraid,filesystem}.nix.)
{ pkgs, ... }:
let
  disk = device: {
    type = "disk";
    inherit device;
    content = {
      type = "gpt";
      partitions = {
        ESP = {
          size = "1G";
          type = "EF00";
          content = { type = "filesystem"; format = "vfat"; mountpoint = if device == "/dev/nvme0n1" then "/boot" else null; mountOptions = [ "umask=0077" ]; };
        };
        raid = { size = "100%"; content = { type = "mdraid"; name = "root"; }; };
      };
    };
  };
in
{
  disko.devices = {
    disk = { nvme0 = disk "/dev/nvme0n1"; nvme1 = disk "/dev/nvme1n1"; };
    mdadm.root = {
      type = "mdadm";
      level = 1;
      content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; };
    };
  };
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  boot.swraid.enable = true; # disko's mdadm type sets it too
  # mdadm's monitor needs a MAILADDR or PROGRAM line, or mdmon crashes
  # (nixpkgs tasks/swraid.nix warns so): each event (Fail, DegradedArray,
  # ...) goes to the journal, tagged mdadm.
  boot.swraid.mdadmConf = "PROGRAM ${pkgs.writeShellScript "mdadm-event" ''
    exec ${pkgs.util-linux}/bin/logger -t mdadm -p daemon.warning -- "$@"
  ''}";
}
