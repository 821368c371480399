# The registry cache as the rest of the host sees it: the interception
# CA made on the host (never in the Nix store), and the endpoints every
# orchestrator puts into its registry_cache settings for its own bridge.
{ util, zot, squid }:
rec {
  # caDir: where the CA lives; ca.pem is public, ca.key readable by the
  # proxy's user only.
  caDir = "/var/lib/registry-cache-ca";
  caCert = "${caDir}/ca.pem";
  caKey = "${caDir}/ca.key";

  # caScript: the oneshot that makes the CA once, with openssl, on the
  # host: the key is written under umask 077 into the state directory and
  # handed to owner:group, the certificate made world-readable. A CA that
  # exists is kept.
  caScript = { owner, group, dir ? caDir, subject ? "/CN=fireactions registry cache CA", days ? 3650 }: ''
    set -eu
    umask 077
    dir=${dir}
    mkdir -p "$dir"
    if [ ! -s "$dir/ca.key" ] || [ ! -s "$dir/ca.pem" ]; then
      rm -f "$dir/ca.key.new" "$dir/ca.pem.new"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key.new" -out "$dir/ca.pem.new" -days ${toString days} \
        -subj '${subject}' \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign
      mv "$dir/ca.key.new" "$dir/ca.key"
      mv "$dir/ca.pem.new" "$dir/ca.pem"
    fi
    chown ${owner}:${group} "$dir/ca.key"
    chmod 0400 "$dir/ca.key"
    chmod 0644 "$dir/ca.pem"
    chmod 0755 "$dir"
  '';

  # endpoints: the cache as the orchestrators need to know it, whatever
  # their bridge (services.microvm-base.cache).
  #   port, mirrors, rootRegistry   Zot's (registry-cache options)
  #   proxy                         { enable; port; sslBump; }
  endpoints = { port, mirrors, rootRegistry, proxy }:
    {
      registryPort = port;
      registries = map (name: { registry = name; prefix = zot.prefixOf rootRegistry name; }) (zot.registryOrder rootRegistry mirrors);
      proxyPort = if proxy.enable then proxy.port else null;
      caFile = if proxy.enable && squid.intercepts proxy.sslBump then caCert else null;
    };

  # forBase: what an enabled registry cache (its options, cfg) adds to
  # services.microvm-base: the ports guests may reach, and the endpoints.
  forBase = cfg: {
    tcp = [ cfg.port ] ++ util.optional cfg.proxy.enable cfg.proxy.port;
    cache = endpoints { inherit (cfg) port mirrors rootRegistry proxy; };
  };

  # settingsFor: one orchestrator's registry_cache section: the cache on
  # its bridge's gateway (docs/config.md).
  settingsFor = { cidr, cache }:
    let
      gw = util.gateway cidr;
      base = "http://${gw}:${toString cache.registryPort}";
      proxy = if cache.proxyPort == null then null else "http://${gw}:${toString cache.proxyPort}";
    in
    util.filterNulls {
      mirrors = map (r: { inherit (r) registry; urls = [ (if r.prefix == "" then base else "${base}/${r.prefix}") ]; }) cache.registries;
      http_proxy = proxy;
      https_proxy = proxy;
      ca_file = cache.caFile;
    };
}
