# Each forge type's default guest root: which nixpkgs runner, which of its
# programs, and where the guest finds it (the pool's runner.path). The
# flake's packages.guest-root-* and the orchestrator module both take
# their guest roots from here, so the two cannot disagree.
{ pkgs, fireactions }:
let
  root = args:
    let package = pkgs.callPackage ./guest-root.nix ({ inherit fireactions; } // args); in {
      inherit package;
      archive = "${package}/root.cpio.gz";
      inherit (args) runnerPath;
    };
in
{
  # act_runner's program is gitea-runner since 1.0 (act_runner before);
  # the guest calls it by the config's default name.
  gitea = root {
    runner = pkgs.gitea-actions-runner;
    runnerBin = pkgs.gitea-actions-runner.meta.mainProgram;
    runnerPath = "/bin/act_runner";
  };
  # A Forgejo's pools (flavor forgejo): the guest runs its one-job.
  forgejo = root {
    runner = pkgs.forgejo-runner;
    runnerBin = pkgs.forgejo-runner.meta.mainProgram or "forgejo-runner";
    runnerPath = "/bin/forgejo-runner";
  };
  # /usr/bin is a link to /bin in the guest root.
  gitlab = root {
    runner = pkgs.gitlab-runner;
    runnerBin = "gitlab-runner";
    runnerPath = "/bin/gitlab-runner";
  };
  # nixpkgs' run.sh wraps the .NET runner.
  github = root {
    runner = pkgs.github-runner;
    runnerBin = "run.sh";
    runnerPath = "/home/runner/run.sh";
  };
}
