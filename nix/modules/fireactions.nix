# services.fireactions: GitHub Actions jobs in microVMs.
args: import ./orchestrator.nix ({ face = "fireactions"; } // args)
