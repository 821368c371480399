# The guest kernel: Linux 6.1 from nixpkgs' own source (linux_6_1.src,
# whose hash nixpkgs pins), configured as the architecture's defconfig
# plus nix/kernel/guest.config (+ guest-x86_64.config) and
# nix/kernel/docker.config, with modules off: every driver a guest needs
# (virtio MMIO and PCI, block, net, console, 8250, ext4, erofs, overlayfs)
# is built in, so no pool has to list kernel_modules.
#
# $out/vmlinux is what Firecracker boots on x86_64 (ELF, PVH entry);
# $out/bzImage what QEMU boots; on aarch64 both boot $out/Image.
# passthru.configfile is the merged .config.
{ lib, stdenv, linux_6_1, flex, bison, perl, bc, elfutils, openssl }:
let
  isx86 = stdenv.hostPlatform.isx86_64;
  arch = stdenv.hostPlatform.linuxArch; # x86_64 or arm64
  fragments = [ ../kernel/guest.config ]
    ++ lib.optional isx86 ../kernel/guest-x86_64.config
    ++ [ ../kernel/docker.config ];
  images = if isx86 then [ "vmlinux" "bzImage" ] else [ "Image" ];

  # The configuration step, run in the kernel source tree with $kernelArch
  # and $fragments (paths) set: defconfig, the fragments merged, then
  # olddefconfig; it fails naming each fragment line that did not survive
  # (an unmet dependency, a symbol this Linux lacks). `make nix-check`
  # (nix/nixcheck/kernel_test.go) runs this very text on Debian's 6.1
  # source.
  configScript = ''
    make ARCH="$kernelArch" defconfig
    scripts/kconfig/merge_config.sh -m .config $fragments
    make ARCH="$kernelArch" olddefconfig
    lost=0
    for fragment in $fragments; do
      name=''${fragment##*/}
      case "$fragment" in /nix/store/*) name=''${name#*-} ;; esac
      while IFS= read -r line; do
        case "$line" in
          CONFIG_*=*)
            if ! grep -qxF "$line" .config; then
              echo "nix/kernel/$name: $line did not survive olddefconfig" >&2
              lost=1
            fi ;;
          "# CONFIG_"*" is not set")
            sym=''${line#\# }
            sym=''${sym%% *}
            if grep -q "^$sym=" .config; then
              echo "nix/kernel/$name: $line did not survive olddefconfig ($(grep "^$sym=" .config))" >&2
              lost=1
            fi ;;
        esac
      done < "$fragment"
    done
    [ "$lost" = 0 ]
  '';
in
stdenv.mkDerivation (finalAttrs: {
  pname = "guest-kernel";
  inherit (linux_6_1) version src;

  nativeBuildInputs = [ flex bison perl bc elfutils openssl ];
  kernelArch = arch;
  inherit fragments;
  enableParallelBuilding = true;

  postPatch = "patchShebangs scripts";
  configurePhase = ''
    runHook preConfigure
    ${configScript}
    runHook postConfigure
  '';
  buildPhase = ''
    runHook preBuild
    make ARCH="$kernelArch" -j$NIX_BUILD_CORES ${lib.concatStringsSep " " images}
    runHook postBuild
  '';
  installPhase = ''
    runHook preInstall
    install -Dm444 .config $out/config
  '' + (if isx86 then ''
    install -Dm444 vmlinux $out/vmlinux
    install -Dm444 arch/x86/boot/bzImage $out/bzImage
  '' else ''
    install -Dm444 arch/arm64/boot/Image $out/Image
  '') + ''
    runHook postInstall
  '';
  # A kernel image is not a program: no stripping, no patchelf.
  dontFixup = true;

  passthru = {
    inherit configScript fragments images;
    # The merged configuration, as a file of the output.
    configfile = "${finalAttrs.finalPackage}/config";
    # What each monitor boots.
    qemuImage = "${finalAttrs.finalPackage}/${if isx86 then "bzImage" else "Image"}";
    firecrackerImage = "${finalAttrs.finalPackage}/${if isx86 then "vmlinux" else "Image"}";
  };

  meta = {
    description = "Linux ${linux_6_1.version} for fireactions guests: virtio, ext4, erofs, overlayfs and Docker's needs built in, no modules";
    license = lib.licenses.gpl2Only;
    platforms = [ "x86_64-linux" "aarch64-linux" ];
  };
})
