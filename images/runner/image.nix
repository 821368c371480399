# A runner image for one forge, as an OCI image (docker-archive tarball)
# that a pool names in vm.image: the forge's runner from nixpkgs at the
# path the pool's runner.path defaults to, the user "runner" (1001) in the
# group docker, and what the forges' default job paths need: bash,
# coreutils, git, node (for `uses:` actions) and the Docker engine with
# buildx. The fireactions agent is not in it: the host boots it as /init.
#
# Not built in this repository's CI (no Nix store there); the Debian image
# (images/debian/build.sh) is the one the e2e tests build and boot.
{ pkgs
, forge            # "gitea", "forgejo", "github" or "gitlab"
, runner           # the runner's package
, runnerBin        # its program, under ${runner}/bin
, runnerPath       # where the pool's runner.path finds it
, extraContents ? [ ]
}:
let
  tools = with pkgs; [
    bashInteractive coreutils findutils gnugrep gnused gnutar gzip xz
    git cacert nodejs_20 curl
    # nixpkgs' iptables is iptables-nft (nftablesCompat defaults to
    # true: bin/iptables -> xtables-nft-multi), so vmroot.CheckDocker
    # finds the nft back end and the guest loads nft's modules.
    docker docker-buildx iptables
    shadow
  ];
  etc = pkgs.runCommand "runner-image-etc-${forge}" { } ''
    mkdir -p $out/etc/docker
    cat > $out/etc/passwd <<'PASSWD'
    root:x:0:0:root:/root:/bin/bash
    runner:x:1001:1001:runner:/home/runner:/bin/bash
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false
    PASSWD
    cat > $out/etc/group <<'GROUP'
    root:x:0:
    docker:x:999:runner
    runner:x:1001:
    nogroup:x:65534:
    GROUP
    sed -i 's/^ *//' $out/etc/passwd $out/etc/group
    echo '{}' > $out/etc/docker/daemon.json
  '';
in
pkgs.dockerTools.buildLayeredImage {
  name = "fireactions-runner-${forge}";
  tag = runner.version;
  contents = tools ++ [ runner etc pkgs.dockerTools.binSh pkgs.dockerTools.usrBinEnv pkgs.dockerTools.caCertificates ] ++ extraContents;
  fakeRootCommands = ''
    mkdir -p ./home/runner ./tmp ./var/lib/docker ./var/run ./root
    chown 1001:1001 ./home/runner
    chmod 1777 ./tmp
    chmod 0700 ./root
    # The pool's default runner.path; /bin/act_runner for gitea.
    mkdir -p "./$(dirname ${runnerPath})"
    ln -sf ${runner}/bin/${runnerBin} "./${runnerPath}"
  '';
  enableFakechroot = false;
  config = {
    Env = [
      "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
      "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
      "LANG=C.UTF-8"
    ];
    WorkingDir = "/home/runner";
  };
}
