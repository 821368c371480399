# Disk layout for a Hetzner Cloud server: one SCSI disk (/dev/sda), BIOS
# or UEFI depending on the server type.
{ lib, ... }:
import ./layout.nix { inherit lib; device = "/dev/sda"; }
