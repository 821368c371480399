# GitHub only: one organisation's jobs, as a GitHub App, on large VMs.
{ ... }:
{
  services.fireactions = {
    enable = true;
    forges.github = {
      appId = 123456;
      # sops-nix secrets (or any root-only host file): never in the store.
      appPrivateKeyFile = "/run/secrets/github-app-key";
      webhookSecretFile = "/run/secrets/github-webhook-secret";
    };
    pools.default = {
      size = "large";
      scope = "org:example";
      repos = [ "example/app" "example/infra" ];
    };
  };
}
