# The three faces of the one program: each NixOS module runs the binary
# under its face's name, with its own unit, state, socket, bridge, guest
# network and metrics port, so that all three can share a host.
let
  face = name: forge: index: {
    inherit name forge;
    unit = "${name}.service";
    stateDir = "/var/lib/${name}";
    runtimeDir = "/run/${name}";
    socket = "/run/${name}/api.sock";
    credentialsDir = "/run/credentials/${name}.service";
    bridge = "${name}0";
    cidr = "10.${toString (200 + index)}.0.0/24";
    metricsPort = 9464 + index;
    # The jailed Firecracker VMMs' uids and gids: a range of its own per
    # face, far above login and system users.
    jailerIds = 800000 + 10000 * index;
  };
in
{
  fireactions = face "fireactions" "github" 0 // { description = "GitHub Actions"; workload = "github-runners"; };
  fireteact = face "fireteact" "gitea" 1 // { description = "Gitea and Forgejo Actions"; workload = "gitea-runners"; };
  fireglab = face "fireglab" "gitlab" 2 // { description = "GitLab CI"; workload = "gitlab-runners"; };
}
