# Disk layout for a generic cloud VM with one virtio disk (/dev/vda): GPT
# with a BIOS boot partition and an EFI system partition, so either
# firmware boots it; ext4 root.
{ lib, ... }:
import ./layout.nix { inherit lib; device = "/dev/vda"; }
