# Firecracker's CI guest kernel: the uncompressed vmlinux its own test
# suite boots, fetched as it is published (a fixed-output derivation).
#
# The hashes are placeholders: the machine this was written on cannot
# reach the bucket. The first `nix build .#firecracker-kernel` fails and
# prints the real hash ("got: sha256-..."); put it here, and check the
# version is still listed under firecracker-ci/<ciVersion>/<arch>/.
{ lib, stdenvNoCC, fetchurl }:
let
  ciVersion = "v1.10";
  version = "6.1.102";
  arch = stdenvNoCC.hostPlatform.parsed.cpu.name; # x86_64 or aarch64
  hashes = {
    x86_64 = lib.fakeHash;
    aarch64 = lib.fakeHash;
  };
in
stdenvNoCC.mkDerivation {
  pname = "firecracker-kernel";
  inherit version;
  src = fetchurl {
    url = "https://s3.amazonaws.com/spec.ccfc.min/firecracker-ci/${ciVersion}/${arch}/vmlinux-${version}";
    hash = hashes.${arch} or (throw "firecracker-kernel: no CI kernel for ${arch}");
  };
  dontUnpack = true;
  installPhase = ''
    runHook preInstall
    install -Dm444 $src $out/vmlinux
    runHook postInstall
  '';
  passthru = { inherit ciVersion; };
  meta = {
    description = "Firecracker's CI guest kernel (Linux ${version}, vmlinux; drivers built in, no modules)";
    homepage = "https://github.com/firecracker-microvm/firecracker/blob/main/docs/kernel-policy.md";
    license = lib.licenses.gpl2Only;
    sourceProvenance = [ lib.sourceTypes.binaryNativeCode ];
    platforms = [ "x86_64-linux" "aarch64-linux" ];
  };
}
