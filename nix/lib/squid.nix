# Squid's configuration for the guests' web proxy: a cache for what jobs
# download over HTTP, CONNECT tunnels for HTTPS, and TLS interception
# (SSL bump) only where asked:
#   off        no interception: HTTPS is tunnelled as it is
#   selective  only the listed domains are intercepted (cached), the rest
#              tunnelled; with no domains it is exactly "off"
#   all        every HTTPS connection is intercepted
# The proxy serves the guests' networks only, and never reaches the host
# itself (its loopback and bridge addresses), link-local addresses or any
# guest (every bridge's network: no VM reaches another through it); with
# blockPrivate (security.blockPrivateNetworks) not the private ranges
# either, as the orchestrators' firewall refuses them to guests.
{ util }:
let
  inherit (builtins) concatStringsSep;
  lines = l: concatStringsSep "\n" l + "\n";
in
rec {
  # intercepts: whether a bump setting intercepts any TLS at all (only
  # then is a CA made and handed to guests).
  intercepts = { mode, domains }:
    mode == "all" || (mode == "selective" && domains != [ ]);

  # privateNetworks: what blockPrivate refuses: the ranges the
  # orchestrators' firewall drops (netplan's PrivateRanges, checked equal
  # by nixcheck), and IPv6's unique local addresses, which Squid can reach
  # for a guest that has no IPv6 of its own.
  privateNetworks = [ "10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "100.64.0.0/10" "fc00::/7" ];

  # config: squid.conf's text.
  #   port              where it listens (every address; the firewall
  #                     opens it on the VM bridges only)
  #   guestNetworks     the VM bridges' CIDRs: the only clients
  #   gateways          the bridges' host addresses: never proxied to
  #   blockPrivate      refuse privateNetworks as destinations
  #   cacheDir, cacheSizeMiB, maxObjectSizeMiB, memoryMiB
  #   sslBump           { mode; domains; }
  #   caCert, caKey     the interception CA (files made on the host)
  #   certgen, certDB   security_file_certgen and its database
  #   trustBundle       the CAs Squid checks upstream servers against
  #   runDir
  config =
    { port
    , guestNetworks
    , gateways
    , blockPrivate ? false
    , cacheDir
    , cacheSizeMiB
    , maxObjectSizeMiB
    , memoryMiB ? 256
    , sslBump
    , caCert
    , caKey
    , certgen
    , certDB
    , trustBundle ? "/etc/ssl/certs/ca-certificates.crt"
    , runDir
    }:
    let
      bump = intercepts sslBump;
      domains = util.unique sslBump.domains;
    in
    lines ([
      "# Rendered by nix/lib/squid.nix; SSL bump: ${if bump then sslBump.mode else "off"}."
      (if bump
      then "http_port ${toString port} ssl-bump tls-cert=${caCert} tls-key=${caKey} generate-host-certificates=on dynamic_cert_mem_cache_size=16MB"
      else "http_port ${toString port}")
      ""
      "acl guests src ${concatStringsSep " " guestNetworks}"
      "acl SSL_ports port 443"
      "acl Safe_ports port 80 443 1025-65535"
      "acl CONNECT method CONNECT"
      # 0.0.0.0 and :: are the host too: Linux connects them to loopback.
      "acl to_host dst 127.0.0.0/8 0.0.0.0/32 ::1 ::/128 ${concatStringsSep " " gateways}"
      "acl to_link_local dst 169.254.0.0/16 fe80::/10"
      "acl to_guests dst ${concatStringsSep " " guestNetworks}"
    ]
    ++ util.optional blockPrivate "acl to_private dst ${concatStringsSep " " privateNetworks}"
    ++ [
      "http_access deny !Safe_ports"
      "http_access deny CONNECT !SSL_ports"
      "http_access deny to_host"
      "http_access deny to_link_local"
      "http_access deny to_guests"
    ]
    ++ util.optional blockPrivate "http_access deny to_private"
    ++ [
      "http_access allow guests"
      "http_access deny all"
    ]
    ++ util.optional bump ""
    ++ (if !bump then [ ]
    else [
      "sslcrtd_program ${certgen} -s ${certDB} -M 16MB"
      "sslcrtd_children 5 startup=1 idle=1"
      "tls_outgoing_options cafile=${trustBundle}"
      "acl step1 at_step SslBump1"
      "ssl_bump peek step1"
    ]
    ++ (if sslBump.mode == "all" then [ "ssl_bump bump all" ]
    else [
      "acl bump_domains ssl::server_name ${concatStringsSep " " domains}"
      "ssl_bump bump bump_domains"
      "ssl_bump splice all"
    ]))
    ++ [
      ""
      "cache_dir ufs ${cacheDir} ${toString cacheSizeMiB} 16 256"
      "maximum_object_size ${toString maxObjectSizeMiB} MB"
      "cache_mem ${toString memoryMiB} MB"
      "coredump_dir ${cacheDir}"
      # Packages and archives change rarely under one name; everything
      # else follows the origin's headers.
      "refresh_pattern -i \\.(deb|udeb|rpm|apk|whl|gem|jar|tgz|tar\\.(gz|xz|zst|bz2)|zip)$ 10080 90% 43200"
      "refresh_pattern . 0 20% 4320"
      ""
      "pid_filename ${runDir}/squid.pid"
      # Every guest can make Squid log a line per request: to syslog
      # (the journal, whose size cap and rate limit bound it), never to
      # a file that grows without end. Its own messages go there too
      # (squid -s).
      "access_log syslog:daemon.info"
      "cache_log /dev/null"
      "via off"
      "forwarded_for delete"
    ]);
}
