# Firecracker's CI kernel configuration for Linux 6.1 plus
# nix/kernel/docker.config (what Docker with bridge networking needs),
# built from nixpkgs' 6.1 sources. The result has the uncompressed
# vmlinux Firecracker boots at its root, and the module tree under lib/.
#
# The base configuration's hash is a placeholder (this machine cannot
# download it): the first build fails and prints the real one.
{ lib, stdenv, runCommand, fetchurl, linux_6_1, linuxManualConfig, flex, bison, perl, bc }:
let
  firecrackerVersion = "v1.10.1";
  arch = stdenv.hostPlatform.parsed.cpu.name; # x86_64 or aarch64
  baseConfig = fetchurl {
    url = "https://raw.githubusercontent.com/firecracker-microvm/firecracker/${firecrackerVersion}/resources/guest_configs/microvm-kernel-ci-${arch}-6.1.config";
    hash = lib.fakeHash;
  };
  fragment = ../kernel/docker.config;

  # The merged .config; the build fails when `make olddefconfig` drops an
  # option of the fragment (a dependency it lacks).
  configfile = stdenv.mkDerivation {
    name = "firecracker-kernel-custom-${linux_6_1.version}.config";
    inherit (linux_6_1) src;
    nativeBuildInputs = [ flex bison perl bc ];
    dontConfigure = true;
    buildPhase = ''
      runHook preBuild
      cp ${baseConfig} .config
      patchShebangs scripts/kconfig/merge_config.sh
      scripts/kconfig/merge_config.sh -m .config ${fragment}
      make ARCH=${stdenv.hostPlatform.linuxArch} olddefconfig
      lost=0
      while IFS= read -r line; do
        case "$line" in
          CONFIG_*=*)
            if ! grep -qxF "$line" .config; then
              echo "nix/kernel/docker.config: $line did not survive olddefconfig" >&2
              lost=1
            fi ;;
        esac
      done < ${fragment}
      [ "$lost" = 0 ]
      runHook postBuild
    '';
    installPhase = "cp .config $out";
  };

  kernel = linuxManualConfig {
    inherit (linux_6_1) src version modDirVersion;
    inherit configfile;
    allowImportFromDerivation = true;
  };
in
runCommand "firecracker-kernel-custom-${kernel.version}"
{
  passthru = { inherit kernel configfile; inherit (kernel) version modDirVersion; };
  meta = kernel.meta // { description = "Linux ${kernel.version} with Firecracker's CI config and Docker bridge networking (vmlinux)"; };
} ''
  mkdir -p $out
  ln -s ${kernel.dev}/vmlinux $out/vmlinux
  ln -s ${kernel}/lib $out/lib
''
