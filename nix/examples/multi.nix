# All three forges on one host, each face with its own bridge, network and
# metrics port, plus the registry cache and the hardened guest network.
{ ... }:
{
  services.fireactions = {
    enable = true;
    forges.github = { tokenFile = "/run/secrets/github-token"; };
    pools.default = { size = "medium"; scope = "repo:example/app"; };
  };
  services.fireteact = {
    enable = true;
    forges.gitea = { url = "https://gitea.example.invalid"; tokenFile = "/run/secrets/gitea-token"; };
    pools.default.size = "small";
  };
  services.fireglab = {
    enable = true;
    forges.gitlab = { url = "https://gitlab.example.invalid"; tokenFile = "/run/secrets/gitlab-token"; };
    pools.default = { size = "small"; scope = "project:example/app"; };
  };
  services.registry-cache.enable = true;
  services.microvm-base.security = {
    blockPrivateNetworks = true;
    newConnectionsPerSecond = 50;
  };
}
