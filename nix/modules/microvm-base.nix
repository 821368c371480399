# services.microvm-base: what every orchestrator face needs from the host.
# The logic is in nix/lib/microvm.nix (plain Nix, checked by make nix-check).
{ config, lib, pkgs, ... }:
let
  l = import ../lib;
  cfg = config.services.microvm-base;
  mkOptions = import ./options.nix { inherit lib pkgs; };
  kernel = cfg.kernel.package;
  bridgeNames = builtins.attrNames cfg.bridges;
  problems = l.microvm.bridgeErrors cfg.bridges
    ++ lib.optional (cfg.kvm.nested && cfg.kvm.cpuVendor == null)
      "services.microvm-base.kvm.nested: nested=1 is an option of kvm-intel or kvm-amd; set services.microvm-base.kvm.cpuVendor to say which";
  kvmModule = lib.optional (cfg.kvm.cpuVendor != null) "kvm-${cfg.kvm.cpuVendor}";
  # What Prometheus scrapes: each enabled orchestrator's metrics listener
  # (nix/lib/microvm.nix scrapeTargets).
  metricsTargets = l.microvm.scrapeTargets (builtins.filter (s: s != null)
    (map (f: if config.services ? ${f} then config.services.${f} else null) (builtins.attrNames l.faces)));
in
{
  options.services.microvm-base = mkOptions l.options.microvm-base {
    qemu.package = pkgs.qemu_kvm;
    kernel.package = pkgs.callPackage ../packages/guest-kernel.nix { };
  };

  config = lib.mkMerge [
    {
      # nix/packages/guest-kernel.nix names its images per architecture
      # (aarch64: Image for both); another kernel has them at its root.
      services.microvm-base.kernel.image = kernel.qemuImage or "${kernel}/bzImage";
      services.microvm-base.kernel.vmlinux = kernel.firecrackerImage or "${kernel}/vmlinux";
      services.microvm-base.kernel.modulesDir =
        if kernel ? modDirVersion
        then "${kernel}/lib/modules/${kernel.modDirVersion}"
        else null;
    }
    # The alert rules and the scrape job they watch, when the host runs
    # Prometheus and an orchestrator serves metrics.
    (lib.mkIf (cfg.enable && cfg.monitoring.prometheus && metricsTargets != [ ]) {
      services.prometheus = lib.mkIf config.services.prometheus.enable {
        ruleFiles = [ ../../deploy/monitoring/alerts.yml ];
        scrapeConfigs = [{ job_name = "fireactions"; static_configs = [{ targets = metricsTargets; }]; }];
      };
    })
    # The dashboard, when the host runs Grafana.
    (lib.mkIf (cfg.enable && cfg.monitoring.grafana) {
      services.grafana.provision = lib.mkIf config.services.grafana.enable {
        enable = true;
        dashboards.settings.providers = [{ name = "fireactions"; options.path = ../../deploy/monitoring/dashboards; }];
      };
    })
    (lib.mkIf cfg.enable {
      assertions = map (message: { assertion = false; inherit message; }) problems;

      boot.kernelModules = lib.optionals cfg.kvm.enable (kvmModule ++ [ "tun" "vhost_net" "bridge" ]);
      boot.extraModprobeConfig = lib.optionalString (cfg.kvm.nested && cfg.kvm.cpuVendor != null) ''
        options kvm-${cfg.kvm.cpuVendor} nested=1
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

      # The host firewall: on each bridge, only what its guests may reach
      # (DNS on TCP too: answers over 512 bytes and resolvers that retry
      # truncated ones use it).
      networking.firewall.interfaces = lib.genAttrs bridgeNames (b: {
        allowedTCPPorts = cfg.bridges.${b}.tcpPorts ++ cfg.guestPorts.tcp ++ lib.optional cfg.dns.enable 53;
        allowedUDPPorts = lib.optional cfg.dns.enable 53 ++ cfg.guestPorts.udp;
      });
      # The orchestrators own these interfaces.
      networking.networkmanager.unmanaged = map (b: "interface-name:${b}") bridgeNames;

      systemd.tmpfiles.rules = [
        "d ${cfg.stateDir} 0755 root root -"
        "L+ ${cfg.stateDir}/kernel - - - - ${cfg.kernel.image}"
        "L+ ${cfg.stateDir}/vmlinux - - - - ${cfg.kernel.vmlinux}"
      ] ++ lib.optional (cfg.kernel.modulesDir != null) "L+ ${cfg.stateDir}/modules - - - - ${cfg.kernel.modulesDir}";
    })
  ];
}
