# services.microvm-base: what every orchestrator face needs from the host.
# The logic is in nix/lib/microvm.nix (plain Nix, checked without nixpkgs).
{ config, lib, pkgs, ... }:
let
  l = import ../lib;
  cfg = config.services.microvm-base;
  mkOptions = import ./options.nix { inherit lib pkgs; };
  kernelPackage = if cfg.kernel.package != null then cfg.kernel.package else pkgs.linuxPackages.kernel;
  kernelFile = l.microvm.kernelFile { inherit (cfg.kernel) source file; };
  bridgeNames = builtins.attrNames cfg.bridges;
  problems = l.microvm.bridgeErrors cfg.bridges
    ++ l.microvm.kernelErrors { inherit (cfg.kernel) source; hasPackage = cfg.kernel.package != null; };
in
{
  options.services.microvm-base = mkOptions l.options.microvm-base {
    qemu.package = pkgs.qemu_kvm;
  };

  config = lib.mkMerge [
    {
      services.microvm-base.kernel.image = "${kernelPackage}/${kernelFile}";
      services.microvm-base.kernel.modulesDir =
        if kernelPackage ? modDirVersion
        then "${kernelPackage}/lib/modules/${kernelPackage.modDirVersion}"
        else null;
    }
    (lib.mkIf cfg.enable {
      assertions = map (message: { assertion = false; inherit message; }) problems;

      boot.kernelModules = lib.optionals cfg.kvm.enable [ "kvm-intel" "kvm-amd" "tun" "vhost_net" "bridge" ];
      boot.extraModprobeConfig = lib.optionalString cfg.kvm.nested ''
        options kvm-intel nested=1
        options kvm-amd nested=1
      '';
      boot.kernel.sysctl = l.microvm.sysctls { harden = cfg.security.hardenSysctls; };
      security.allowSimultaneousMultithreading = lib.mkIf cfg.security.disableSMT false;
      security.lockKernelModules = lib.mkIf cfg.security.lockKernelModules true;

      # DNS for guests, on the bridges only.
      services.dnsmasq = lib.mkIf (cfg.dns.enable && bridgeNames != [ ]) {
        enable = true;
        resolveLocalQueries = false;
        settings = l.microvm.dnsmasq { inherit (cfg) bridges; inherit (cfg.dns) upstreams; };
      };

      # The host firewall: on each bridge, only what its guests may reach.
      networking.firewall.interfaces = lib.genAttrs bridgeNames (b: {
        allowedTCPPorts = cfg.bridges.${b}.tcpPorts ++ cfg.guestPorts.tcp;
        allowedUDPPorts = lib.optional cfg.dns.enable 53 ++ cfg.guestPorts.udp;
      });
      # The orchestrators own these interfaces.
      networking.networkmanager.unmanaged = map (b: "interface-name:${b}") bridgeNames;

      systemd.tmpfiles.rules = [
        "d ${cfg.stateDir} 0755 root root -"
        "L+ ${cfg.stateDir}/kernel - - - - ${cfg.kernel.image}"
      ] ++ lib.optional (cfg.kernel.modulesDir != null) "L+ ${cfg.stateDir}/modules - - - - ${cfg.kernel.modulesDir}";
    })
  ];
}
