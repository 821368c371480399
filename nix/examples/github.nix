# GitHub only: two organisations' jobs, as one GitHub App.
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
    # The same App installed in a second organisation: its own
    # installation (and rate budget). Enterprise scope takes no App: give
    # it a forge with a classic token (manage_runners:enterprise).
    pools.labs = {
      scope = "org:example-labs";
      installationId = 7654321;
    };
  };
}
