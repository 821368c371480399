# A forge's default guest root (vm.root_initramfs): static busybox and
# bash from pkgsStatic, and the forge's runner from nixpkgs with its whole
# store closure (nixpkgs' runners are dynamically linked against /nix/store
# paths), copied under the same paths. The runner is a symlink at
# runnerPath (default /bin/<runnerBin>) into its store path. The guest
# agent is not in it: `serve` puts it in each pool's boot archive as /init.
#
# $out/root.cpio.gz, written by `fireactions guest-root` (guestroot/).
{ lib, runCommand, closureInfo, pkgsStatic, fireactions, runner, runnerBin
, runnerPath ? "/bin/${runnerBin}" }:
let
  closure = closureInfo { rootPaths = [ runner ]; };
  runnerExe = "${runner}/bin/${runnerBin}";
in
runCommand "guest-root-${runner.name}"
{
  passthru = { inherit closure runnerPath runnerExe; };
  meta.description = "Guest root with ${runnerBin} at ${runnerPath}, busybox and bash";
} ''
  if [ ! -x ${runnerExe} ]; then
    echo "guest-root.nix: ${runner} has no executable bin/${runnerBin} (runnerBin)" >&2
    exit 1
  fi
  mkdir -p $out
  ${fireactions}/bin/fireactions guest-root \
    --busybox ${pkgsStatic.busybox}/bin/busybox \
    --bash ${pkgsStatic.bash}/bin/bash \
    --closure ${closure}/store-paths \
    --runner-link ${runnerExe} \
    --runner-path ${runnerPath} \
    --out $out/root.cpio.gz
''
