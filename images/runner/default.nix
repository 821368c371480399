# The runner image of each forge (images/runner/image.nix): the flake's
# packages.runner-image-<forge>. Runner paths are the pools' defaults
# (nix/packages/guest-roots.nix says the same for the guest roots).
{ pkgs }:
let
  image = args: import ./image.nix ({ inherit pkgs; } // args);
in
{
  gitea = image {
    forge = "gitea";
    runner = pkgs.gitea-actions-runner;
    runnerBin = pkgs.gitea-actions-runner.meta.mainProgram;
    runnerPath = "/bin/act_runner";
  };
  forgejo = image {
    forge = "forgejo";
    runner = pkgs.forgejo-runner;
    runnerBin = pkgs.forgejo-runner.meta.mainProgram or "forgejo-runner";
    runnerPath = "/bin/forgejo-runner";
  };
  # nixpkgs' github-runner is not the release layout: its bin/run.sh is
  # a wrapper that runs the runner from the (read-only) store with
  # RUNNER_ROOT defaulting to $HOME/.github-runner, which it creates:
  # the runner's HOME (/home/runner, on the VM's writable disk) takes
  # what the release layout writes beside run.sh. The pool's default
  # /home/runner/run.sh is a link to that wrapper.
  github = image {
    forge = "github";
    runner = pkgs.github-runner;
    runnerBin = "run.sh";
    runnerPath = "/home/runner/run.sh";
  };
  gitlab = image {
    forge = "gitlab";
    runner = pkgs.gitlab-runner;
    runnerBin = "gitlab-runner";
    runnerPath = "/usr/bin/gitlab-runner";
  };
}
