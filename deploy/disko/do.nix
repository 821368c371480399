# Disk layout for a DigitalOcean droplet: one virtio disk, BIOS boot.
{ lib, ... }:
import ./layout.nix { inherit lib; device = "/dev/vda"; }
