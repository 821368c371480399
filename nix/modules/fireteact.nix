# services.fireteact: Gitea and Forgejo Actions jobs in microVMs.
args: import ./orchestrator.nix ({ face = "fireteact"; } // args)
