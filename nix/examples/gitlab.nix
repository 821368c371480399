# GitLab only: one group's jobs on medium VMs, protected branches only.
{ ... }:
{
  services.fireglab = {
    enable = true;
    forges.gitlab = {
      url = "https://gitlab.example.invalid";
      tokenFile = "/run/secrets/gitlab-token";
    };
    pools.default = {
      size = "medium";
      scope = "group:example";
      settings.runner = { access_level = "ref_protected"; maximum_timeout = "2h"; };
    };
  };
}
