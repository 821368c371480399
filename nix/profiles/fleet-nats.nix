# fleet-nats: this host runs one node of the fleet's NATS JetStream
# cluster (docs/fleet.md) with nixpkgs' services.nats, routed to the other
# hosts that carry the tag (hosts/registry.json). Clients and routes need
# the token of registry fleetNats.tokenFile (a sops secret); it reaches
# nats-server through LoadCredential and its environment, never the store,
# a command line or the generated configuration, which names it only as
# the variable $FLEET_NATS_TOKEN (nats-server reads unset variables from
# its environment). The token must be URL-safe (letters, digits, - _ . ~,
# starting with a letter; the start script refuses any other): the routes
# carry it as their password, and nats-server parses the variable's value.
# Token and traffic travel in plaintext (no TLS here): run the cluster on
# a private network. Outside the hive (no registry
# module argument) it runs a node without routes.
{ config, lib, pkgs, ... }:
let
  registry = config._module.args.registry or { hosts = { }; };
  hive = (import ../lib).hive;
  name = config.networking.hostName;
  peers = builtins.filter (n: n != name) (hive.natsHosts registry);
  address = n: registry.hosts.${n}.address;
  cluster = toString hive.natsClusterPort;
  routeVar = i: "FLEET_NATS_ROUTE_${toString i}";
  tokenFile = hive.natsTokenFile registry;

  # services.nats.settings as nats-server's own syntax (JSON values are
  # valid there), then what refers to the environment: the token and the
  # routes, unquoted variables.
  conf = pkgs.writeText "fleet-nats.conf" (lib.concatStringsSep "\n"
    (lib.mapAttrsToList (k: v: "${k}: ${builtins.toJSON v}") config.services.nats.settings ++ [
      "authorization { token: $FLEET_NATS_TOKEN }"
      "cluster {"
      "  name: fireactions"
      "  port: ${cluster}"
      "  authorization { user: fleet, password: $FLEET_NATS_TOKEN }"
      "  routes: [ ${lib.concatStringsSep ", " (lib.imap0 (i: _: "$" + routeVar i) peers)} ]"
      "}"
      ""
    ]));

  start = pkgs.writeShellScript "fleet-nats-start" ''
    set -eu
    FLEET_NATS_TOKEN="$(${pkgs.coreutils}/bin/cat "$CREDENTIALS_DIRECTORY/fleet-nats-token")"
    # nats-server parses the variable's value as configuration: only a
    # plain word of URL-safe characters that starts with a letter and is
    # no boolean stays the string it is (digits, 1k, true, # or + / =
    # would not).
    case "$FLEET_NATS_TOKEN" in
      "" | *[!A-Za-z0-9._~-]* | [!A-Za-z]* | [Tt][Rr][Uu][Ee] | [Ff][Aa][Ll][Ss][Ee] | [Yy][Ee][Ss] | [Nn][Oo] | [Oo][Nn] | [Oo][Ff][Ff])
        echo "fleet-nats: the token in ${tokenFile} must be letters, digits and . _ ~ - only, start with a letter and be no true/false/yes/no/on/off (nats-server reads it as configuration)" >&2
        exit 1 ;;
    esac
    export FLEET_NATS_TOKEN
    ${lib.concatStrings (lib.imap0 (i: n: ''
      export ${routeVar i}="nats-route://fleet:$FLEET_NATS_TOKEN@${address n}:${cluster}"
    '') peers)}
    exec ${pkgs.nats-server}/bin/nats-server -c ${conf}
  '';
in
{
  services.nats = {
    enable = true;
    jetstream = true;
    serverName = name;
    port = hive.natsClientPort;
  };
  systemd.services.nats = {
    serviceConfig = {
      LoadCredential = [ "fleet-nats-token:${tokenFile}" ];
      ExecStart = lib.mkForce start;
    };
    restartTriggers = [ conf ];
  };
  networking.firewall.allowedTCPPorts = [ hive.natsClientPort hive.natsClusterPort ];
}
