# The NixOS options our modules, profiles and fleet hosts set, declared
# with the types nixpkgs gives them, so that nixpkgs' lib.evalModules
# checks every definition as a NixOS system would: a wrong type or an
# option NixOS does not have fails here with the option's path.
#
# Only what we set is declared (everything else is "does not exist"),
# each with the nixpkgs file it comes from. Types nixpkgs builds itself
# (systemd's unit options, sysctl values, the key=value settings
# formats) are rebuilt here from nixpkgs' definitions; freeform settings
# stay freeform exactly where nixpkgs makes them freeform.
{ config, options, lib, pkgs, ... }:
let
  inherit (lib) types mkOption;

  opt = type: default: mkOption { inherit type default; };
  req = type: mkOption { inherit type; };
  bool = default: opt types.bool default;
  enable = bool false;
  strs = opt (types.listOf types.str) [ ];

  # nixos/lib/systemd-lib.nix: unitNameType.
  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # nixos/lib/systemd-unit-options.nix: unitOption. Lists concatenate
  # (repeatable directives), anything else must be defined once or
  # equally.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    description = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if lib.any (d: builtins.isList d.value) defs'
      then lib.concatMap (d: lib.toList d.value) defs'
      else lib.mergeEqualOption loc defs';
  };

  # nixos/lib/systemd-lib.nix: checkUnitConfig, with the Service checks of
  # nixos/lib/systemd-unit-options.nix (Type, Restart). The check sees
  # each definition as written, so a top-level mkIf/mkOverride wrapper
  # around a directive is looked through once, as upstream does.
  # Beyond upstream's type: every value must render into the unit file
  # (systemd-lib.nix attrsToSection/toOption, i.e. toString), which a
  # NixOS build of the system would fail on; wrappers nested deeper are
  # left to the merge.
  checkService = attrs:
    let
      unwrap = v: if builtins.isAttrs v && builtins.elem (v._type or "") [ "override" "if" ] then v.content else v;
      defs = builtins.mapAttrs (_: unwrap) attrs;
      renders = v:
        v == null || builtins.isBool v || builtins.isInt v || builtins.isFloat v || builtins.isString v || builtins.isPath v
        || (builtins.isAttrs v && (v ? outPath || v ? __toString || v ? _type))
        || (builtins.isList v && lib.all renders v);
      oneOf = name: allowed: !(defs ? ${name}) || builtins.elem defs.${name} allowed;
    in
    lib.all renders (builtins.attrValues defs)
    && oneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ]
    && oneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ];

  # nixos/lib/systemd-unit-options.nix: the options of a service
  # (commonUnitOptions, stage2CommonUnitOptions, serviceOptions,
  # stage2ServiceOptions) that units may set.
  service = types.submodule {
    options = {
      enable = bool true;
      description = opt types.singleLineStr "";
      documentation = strs;
      wantedBy = opt (types.listOf unitName) [ ];
      requiredBy = opt (types.listOf unitName) [ ];
      wants = opt (types.listOf unitName) [ ];
      requires = opt (types.listOf unitName) [ ];
      after = opt (types.listOf unitName) [ ];
      before = opt (types.listOf unitName) [ ];
      bindsTo = opt (types.listOf unitName) [ ];
      partOf = opt (types.listOf unitName) [ ];
      conflicts = opt (types.listOf unitName) [ ];
      unitConfig = opt (types.attrsOf unitOption) { };
      restartTriggers = opt (types.listOf types.unspecified) [ ];
      reloadTriggers = opt (types.listOf unitOption) [ ];
      restartIfChanged = bool true;
      reloadIfChanged = bool false;
      stopIfChanged = bool true;
      environment = opt (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
      path = opt (types.listOf (types.oneOf [ types.package types.str ])) [ ];
      # nixos/modules/system/boot/systemd.nix (services' extra options):
      # coreutils, findutils, grep, sed and systemd on PATH unless false.
      enableDefaultPath = bool true;
      serviceConfig = opt (types.addCheck (types.attrsOf unitOption) checkService) { };
      script = opt types.lines "";
      scriptArgs = opt types.str "";
      preStart = opt types.lines "";
      postStart = opt types.lines "";
      reload = opt types.lines "";
      preStop = opt types.lines "";
      postStop = opt types.lines "";
      startAt = mkOption { type = types.either types.str (types.listOf types.str); default = [ ]; apply = lib.toList; };
    };
  };

  # nixos/modules/config/sysctl.nix: sysctlOption (a bool, string, int
  # or null; an mkOverride'd one counts by its content), and the two
  # buffer sizes it types itself: unsigned, the highest definition wins.
  sysctlValue = lib.mkOptionType {
    name = "sysctl option value";
    check = v:
      let plain = x: builtins.isBool x || builtins.isString x || builtins.isInt x || x == null; in
      plain v || ((v._type or "") == "override" && plain v.content);
    merge = loc: defs: lib.mergeOneOption loc (lib.filterOverrides defs);
  };
  highestUnsigned = types.ints.unsigned // {
    merge = loc: defs: lib.foldl (acc: d: if d.value == null then null else lib.max acc d.value) 0 (lib.filterOverrides defs);
  };

  # pkgs/pkgs-lib/formats.nix keyValue: an atom is null, a bool, an int,
  # a float or a string; with listsAsDuplicateKeys (dnsmasq) a single
  # atom is coerced to a one-element list and definitions concatenate;
  # without it (sshd's base format) lists are not atoms.
  keyValueAtom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str ]);
  keyValueDuplicates = types.attrsOf (types.coercedTo keyValueAtom lib.singleton (types.listOf keyValueAtom));
  keyValuePlain = types.attrsOf keyValueAtom;

  # pkgs/pkgs-lib/formats.nix yaml/json: a value is null, a bool, an int,
  # a float, a string, a path, or an attribute set or list of values.
  yamlValue = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path
    (types.attrsOf yamlValue) (types.listOf yamlValue) ]) // { description = "YAML value"; };

  # nixos/modules/services/networking/firewall.nix: commonOptions (the
  # port lists come out sorted, without duplicates).
  canonicalPorts = ports: lib.unique (builtins.sort builtins.lessThan ports);
  firewallRules = {
    allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; apply = canonicalPorts; };
    allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; apply = canonicalPorts; };
    allowedTCPPortRanges = opt (types.listOf (types.attrsOf types.port)) [ ];
    allowedUDPPortRanges = opt (types.listOf (types.attrsOf types.port)) [ ];
  };

  # nixos/modules/config/users-groups.nix: userOpts and groupOpts (the
  # fields we use; names and groups must stay under 32 characters), with
  # openssh.authorizedKeys from nixos/modules/services/networking/ssh/sshd.nix.
  shortName = what: x: assert (builtins.stringLength x < 32 || abort "${what} '${x}' is longer than 31 characters which is not allowed!"); x;
  user = types.submodule ({ name, config, ... }: {
    options = {
      name = mkOption { type = types.passwdEntry types.str; default = name; apply = shortName "Username"; };
      isSystemUser = bool false;
      isNormalUser = bool false;
      group = mkOption { type = types.str; default = ""; apply = shortName "Group name"; };
      extraGroups = strs;
      description = opt (types.passwdEntry types.str) "";
      home = opt (types.passwdEntry types.path) "/var/empty";
      createHome = bool false;
      uid = opt (types.nullOr types.int) null;
      openssh.authorizedKeys.keys = opt (types.listOf types.singleLineStr) [ ];
    };
    # A normal user's defaults, as userOpts sets them.
    config = lib.mkIf config.isNormalUser {
      group = lib.mkDefault "users";
      createHome = lib.mkDefault true;
      home = lib.mkDefault "/home/${config.name}";
    };
  });
  group = types.submodule ({ name, ... }: {
    options = {
      name = opt (types.passwdEntry types.str) name;
      gid = opt (types.nullOr types.int) null;
      members = opt (types.listOf (types.passwdEntry types.str)) [ ];
    };
  });

  # nixos/modules/config/nix.nix: the atoms of nix.conf.
  nixConfAtom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path types.package ]);
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = opt (types.listOf types.str) [ ];

    # nixos/modules/system/boot/kernel.nix
    boot.kernelModules = strs;
    boot.kernelParams = opt (types.listOf (types.strMatching ''([^"[:space:]]|"[^"]*")+'')) [ ];
    boot.initrd.availableKernelModules = strs;
    # nixos/modules/system/boot/modprobe.nix
    boot.extraModprobeConfig = opt types.lines "";
    boot.blacklistedKernelModules = strs;
    # nixos/modules/config/sysctl.nix
    boot.kernel.sysctl = opt
      (types.submodule {
        freeformType = types.attrsOf sysctlValue;
        options."net.core.rmem_max" = opt (types.nullOr highestUnsigned) null;
        options."net.core.wmem_max" = opt (types.nullOr highestUnsigned) null;
      })
      { };
    # nixos/modules/system/boot/loader/grub/grub.nix
    boot.loader.grub = {
      enable = bool true;
      device = opt types.str "";
      devices = opt (types.listOf types.str) [ ];
      efiSupport = bool false;
      efiInstallAsRemovable = bool false;
    };
    # nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix
    boot.loader.systemd-boot.enable = bool false;
    # nixos/modules/system/boot/loader/efi.nix
    boot.loader.efi.canTouchEfiVariables = bool false;
    # nixos/modules/tasks/swraid.nix (on by default only for systems
    # first installed before 23.11)
    boot.swraid.enable = bool (lib.versionOlder config.system.stateVersion "23.11");
    boot.swraid.mdadmConf = opt types.lines "";
    # nixos/modules/system/boot/grow-partition.nix
    boot.growPartition = bool false;

    # nixos/modules/security/misc.nix
    security.allowSimultaneousMultithreading = bool true;
    security.protectKernelImage = bool false;
    # nixos/modules/security/lock-kernel-modules.nix
    security.lockKernelModules = bool false;
    # nixos/modules/security/sudo.nix
    security.sudo.execWheelOnly = bool false;

    # nixos/modules/services/networking/dnsmasq.nix
    services.dnsmasq = {
      enable = enable;
      resolveLocalQueries = bool true;
      settings = opt (types.submodule { freeformType = keyValueDuplicates; options.server = strs; }) { };
    };

    # nixos/modules/services/networking/ssh/sshd.nix: settings is the
    # keyValue format without duplicate keys (no lists) plus the
    # directives sshd.nix types itself, each nullable (null: left out).
    services.openssh = {
      enable = enable;
      hostKeys = opt (types.listOf types.attrs) [
        { type = "rsa"; bits = 4096; path = "/etc/ssh/ssh_host_rsa_key"; }
        { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; }
      ];
      settings = opt
        (types.submodule {
          freeformType = keyValuePlain;
          options =
            let
              maybe = t: opt (types.nullOr t);
              names = maybe (types.listOf types.str) null;
            in
            {
              AuthorizedPrincipalsFile = maybe types.str "none";
              LogLevel = maybe (types.enum [ "QUIET" "FATAL" "ERROR" "INFO" "VERBOSE" "DEBUG" "DEBUG1" "DEBUG2" "DEBUG3" ]) "INFO";
              UsePAM = maybe types.bool true;
              UseDns = maybe types.bool false;
              X11Forwarding = maybe types.bool false;
              PasswordAuthentication = maybe types.bool true;
              PermitRootLogin = maybe (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ]) "prohibit-password";
              KbdInteractiveAuthentication = maybe types.bool true;
              GatewayPorts = maybe types.str "no";
              KexAlgorithms = maybe (types.listOf types.str) [ "sntrup761x25519-sha512@openssh.com" "curve25519-sha256" "curve25519-sha256@libssh.org" "diffie-hellman-group-exchange-sha256" ];
              Macs = maybe (types.listOf types.str) [ "hmac-sha2-512-etm@openssh.com" "hmac-sha2-256-etm@openssh.com" "umac-128-etm@openssh.com" ];
              StrictModes = maybe types.bool true;
              Ciphers = maybe (types.listOf types.str) [ "chacha20-poly1305@openssh.com" "aes256-gcm@openssh.com" "aes128-gcm@openssh.com" "aes256-ctr" "aes192-ctr" "aes128-ctr" ];
              AllowUsers = names;
              DenyUsers = names;
              AllowGroups = names;
              DenyGroups = names;
              PrintMotd = maybe types.bool false;
            };
        })
        { };
    };
    # nixos/modules/services/monitoring/prometheus/default.nix: the fields
    # we set. promTypes.scrape_config and static_config are submodules
    # without a freeform type; static_configs is mkOpt (null: left out).
    services.prometheus = {
      enable = enable;
      ruleFiles = opt (types.listOf types.path) [ ];
      scrapeConfigs = opt
        (types.listOf (types.submodule {
          options = {
            job_name = req types.str;
            static_configs = opt
              (types.nullOr (types.listOf (types.submodule {
                options = {
                  targets = req (types.listOf types.str);
                  labels = opt (types.attrsOf types.str) { };
                };
              })))
              null;
          };
        }))
        [ ];
    };
    # nixos/modules/services/monitoring/grafana.nix: provision, with
    # grafanaTypes.dashboardConfig (freeform over the YAML format's
    # values, as provisioningSettingsFormat makes it).
    services.grafana = {
      enable = enable;
      provision = {
        enable = enable;
        dashboards = opt
          (types.submodule {
            options = {
              settings = opt
                (types.nullOr (types.submodule {
                  options = {
                    apiVersion = opt types.int 1;
                    providers = opt
                      (types.listOf (types.submodule {
                        freeformType = types.attrsOf yamlValue;
                        options = {
                          name = opt types.str "default";
                          type = opt types.str "file";
                          options.path = req types.path;
                        };
                      }))
                      [ ];
                  };
                }))
                null;
              path = opt (types.nullOr (types.either types.path types.str)) null;
            };
          })
          { };
      };
    };
    # nixos/modules/services/networking/nats.nix (nixpkgs 1d51c8b): settings
    # is pkgs.formats.json's value type; the module sets server_name, port
    # and jetstream in it (config below).
    services.nats = {
      enable = enable;
      user = opt types.str "nats";
      group = opt types.str "nats";
      serverName = opt types.str "nats";
      jetstream = enable;
      port = opt types.port 4222;
      dataDir = opt types.path "/var/lib/nats";
      settings = opt (pkgs.formats.json { }).type { };
    };

    # nixos/modules/system/boot/systemd/journald.nix
    services.journald.extraConfig = opt types.lines "";

    # nixos/modules/services/networking/firewall.nix
    networking.firewall = firewallRules // {
      enable = bool true;
      interfaces = opt (types.attrsOf (types.submodule { options = firewallRules; })) { };
    };
    # nixos/modules/services/networking/networkmanager.nix
    networking.networkmanager.unmanaged = strs;
    # nixos/modules/tasks/network-interfaces.nix
    networking.hostName = opt (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";

    # nixos/modules/system/boot/systemd.nix
    systemd.services = opt (types.attrsOf service) { };
    # nixos/modules/system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = strs;

    # nixos/modules/config/system-path.nix
    environment.systemPackages = opt (types.listOf types.package) [ ];

    # nixos/modules/config/users-groups.nix
    users.users = opt (types.attrsOf user) { };
    users.groups = opt (types.attrsOf group) { };

    # nixos/modules/services/misc/nix-gc.nix
    nix.gc = {
      automatic = bool false;
      dates = mkOption { type = types.either types.singleLineStr (types.listOf types.str); default = [ "03:15" ]; apply = lib.toList; };
      options = opt types.singleLineStr "";
    };
    # nixos/modules/config/nix.nix: settings is freeform over nix.conf
    # atoms and lists of them; these keys are typed. substituters,
    # trusted-public-keys and system-features have no default: the
    # module defines them (config below).
    nix.settings = opt
      (types.submodule {
        freeformType = types.attrsOf (types.either nixConfAtom (types.listOf nixConfAtom));
        options = {
          max-jobs = opt (types.either types.int (types.enum [ "auto" ])) "auto";
          auto-optimise-store = bool false;
          cores = opt types.int 0;
          sandbox = opt (types.either types.bool (types.enum [ "relaxed" ])) true;
          extra-sandbox-paths = strs;
          substituters = req (types.listOf types.str);
          trusted-substituters = strs;
          require-sigs = bool true;
          trusted-public-keys = req (types.listOf types.str);
          trusted-users = opt (types.listOf types.str) [ "root" ];
          system-features = req (types.listOf types.str);
          allowed-users = opt (types.listOf types.str) [ "*" ];
        };
      })
      { };

    # nixos/modules/tasks/auto-upgrade.nix
    system.autoUpgrade.enable = bool false;
    # nixos/modules/misc/version.nix (unset: this release, with a warning)
    system.stateVersion = mkOption {
      type = types.str;
      default = lib.trivial.release;
      apply = v: lib.warnIf (options.system.stateVersion.highestPrio == (lib.mkOptionDefault { }).priority)
        "system.stateVersion is not set, defaulting to ${v}." v;
    };
    # nixos/modules/system/activation/top-level.nix: freeform, each
    # attribute defined once.
    system.build = opt (types.submoduleWith { modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ]; }) { };
    # nixos/modules/misc/nixpkgs.nix: a system string or a platform
    # attribute set, elaborated; no default.
    nixpkgs.hostPlatform = mkOption { type = types.either types.str types.attrs; apply = lib.systems.elaborate; };

    # nixos/modules/tasks/filesystems.nix (the fields we set)
    fileSystems = opt
      (types.attrsOf (types.submodule {
        options = {
          device = opt (types.nullOr types.nonEmptyStr) null;
          fsType = opt types.nonEmptyStr "auto";
          autoResize = bool false;
          options = opt (types.nonEmptyListOf types.nonEmptyStr) [ "defaults" ];
        };
      }))
      { };
  };

  # What nixos/modules/services/networking/nats.nix puts in its settings.
  config.services.nats.settings = lib.mkIf config.services.nats.enable {
    server_name = config.services.nats.serverName;
    port = config.services.nats.port;
    jetstream = lib.optionalAttrs config.services.nats.jetstream { store_dir = config.services.nats.dataDir; };
  };

  # What nixos/modules/config/nix.nix defines for the settings it leaves
  # without a default (the package set's platform features aside).
  config.nix.settings = {
    trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    substituters = lib.mkAfter [ "https://cache.nixos.org/" ];
    system-features = lib.mkDefault [ "nixos-test" "benchmark" "big-parallel" "kvm" ];
  };
}
