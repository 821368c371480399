# services.fireglab: GitLab CI jobs in microVMs.
args: import ./orchestrator.nix ({ face = "fireglab"; } // args)
