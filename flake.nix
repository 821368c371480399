{
  description = "nixos-fireactions: CI jobs of GitHub, Gitea/Forgejo and GitLab, each in an ephemeral microVM, on NixOS hosts";

  inputs = {
    # nixos-unstable: the first channel with Go 1.26.8 (go.mod's go line;
    # the package builds with buildGo126Module) and Zot with its sync
    # extension (pkgs.zot). nixos-25.05 has neither.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    disko.url = "github:nix-community/disko";
    disko.inputs.nixpkgs.follows = "nixpkgs";
    sops-nix.url = "github:Mic92/sops-nix";
    sops-nix.inputs.nixpkgs.follows = "nixpkgs";
    colmena.url = "github:zhaofengli/colmena";
    colmena.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, disko, sops-nix, colmena, ... }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      plain = import ./nix/lib;
      version = self.shortRev or self.dirtyShortRev or "dev";
      # The module's default package of a face, for a host's pkgs.
      defaultPackages = pkgs: face: self.packages.${pkgs.stdenv.hostPlatform.system}.${face};
      fleet = import ./hosts/hive.nix { inherit self nixpkgs disko sops-nix; };
    in
    {
      lib = plain;

      packages = forAll (pkgs: rec {
        fireactions = pkgs.callPackage ./nix/packages/fireactions.nix { inherit version; src = self; };
        fireteact = pkgs.callPackage ./nix/packages/face.nix { inherit fireactions; face = "fireteact"; };
        fireglab = pkgs.callPackage ./nix/packages/face.nix { inherit fireactions; face = "fireglab"; };
        default = fireactions;
        # The guest kernel: nixpkgs' Linux 6.1 source, nix/kernel/*.config,
        # modules off ($out/vmlinux and $out/bzImage; $out/Image on aarch64).
        guest-kernel = pkgs.callPackage ./nix/packages/guest-kernel.nix { };
        # Each forge's default guest root ($out/root.cpio.gz): busybox, bash
        # and the runner's closure (nix/packages/guest-roots.nix, which the
        # orchestrator module uses too).
      } // nixpkgs.lib.mapAttrs' (forge: r: { name = "guest-root-${forge}"; value = r.package; })
        (import ./nix/packages/guest-roots.nix { inherit pkgs; fireactions = self.packages.${pkgs.stdenv.hostPlatform.system}.fireactions; })
      // nixpkgs.lib.mapAttrs' (forge: image: { name = "runner-image-${forge}"; value = image; })
        # Each forge's runner image for vm.image (images/runner/): the
        # runner, git, node, bash, coreutils, Docker and buildx.
        (import ./images/runner { inherit pkgs; })
      // {
        # Host images (images/): a qcow2 for any KVM cloud, a VHD for Azure.
        image-qcow2 = (nixpkgs.lib.nixosSystem {
          inherit (pkgs.stdenv.hostPlatform) system;
          modules = [ self.nixosModules.default ./images/qcow2.nix ];
        }).config.system.build.fireactionsImage;
        image-azure = (nixpkgs.lib.nixosSystem {
          inherit (pkgs.stdenv.hostPlatform) system;
          modules = [ self.nixosModules.default ./images/azure.nix ];
        }).config.system.build.fireactionsImage;
      });

      nixosModules = {
        microvm-base = ./nix/modules/microvm-base.nix;
        registry-cache = ./nix/modules/registry-cache.nix;
        fireactions = import ./nix/modules/fireactions.nix { defaultPackage = pkgs: defaultPackages pkgs "fireactions"; };
        fireteact = import ./nix/modules/fireteact.nix { defaultPackage = pkgs: defaultPackages pkgs "fireteact"; };
        fireglab = import ./nix/modules/fireglab.nix { defaultPackage = pkgs: defaultPackages pkgs "fireglab"; };
        default = import ./nix/modules { inherit defaultPackages; };
      };

      # Profiles by tag (nix/lib/profiles.nix), one NixOS module each; kept
      # out of nixosModules, whose every entry must be a module.
      profiles = import ./nix/profiles;

      # The fleet of hosts/registry.json: nixos-anywhere installs
      # nixosConfigurations.<host>, Colmena deploys colmena / colmenaHive.
      inherit (fleet) nixosConfigurations;
      colmena = fleet.colmena;
      colmenaHive = colmena.lib.makeHive self.colmena;

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ go gopls shellcheck jq qemu_kvm nftables sops age colmena.packages.${pkgs.stdenv.hostPlatform.system}.colmena nixos-anywhere ];
        };
      });

      checks = forAll (pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
          fireactions = self.packages.${system}.fireactions;
        in
        {
          # Every preset's configuration, checked by the built binary (the
          # same files `make nix-check` checks with the Go test).
          presets = pkgs.runCommand "presets-validate" { } (nixpkgs.lib.concatStrings (nixpkgs.lib.mapAttrsToList
            (name: cfg: ''
              ${fireactions}/bin/fireactions validate --offline ${pkgs.writeText "${name}.json" (builtins.toJSON cfg)}
            '')
            (import ./nix/checks.nix { }).presets) + "touch $out\n");
        }
        # Every example host of this system, built as a whole NixOS system
        # (which runs `validate --offline` on each face's configuration).
        // nixpkgs.lib.mapAttrs' (name: c: { name = "host-${name}"; value = c.config.system.build.toplevel; })
          (nixpkgs.lib.filterAttrs (_: c: c.pkgs.stdenv.hostPlatform.system == system) self.nixosConfigurations));
    };
}
