# Gitea (or Forgejo) and a registry cache: the guests pull images through
# Zot on their gateway.
{ ... }:
{
  services.fireteact = {
    enable = true;
    forges.gitea = {
      url = "https://gitea.example.invalid";
      tokenFile = "/run/secrets/gitea-token";
    };
    pools.default = { size = "medium"; scope = "org:example"; };
    pools.small = { size = "small"; labels = [ "linux" "lint" ]; };
  };
  services.registry-cache.enable = true;
}
