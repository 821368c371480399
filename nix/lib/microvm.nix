# microvm-base's logic: the bridges' registry, sysctls
# and the guests' DNS.
{ util }:
let
  inherit (builtins) attrNames concatMap filter length elemAt genList;
in
rec {
  # bridgeErrors: what is wrong with a bridges registry
  # ({ name = { cidr; owner; }; }): bad names, bad or overlapping prefixes.
  bridgeErrors = bridges:
    let
      names = attrNames bridges;
      n = length names;
      pairs = concatMap (i: map (j: { a = elemAt names i; b = elemAt names j; }) (genList (j: j + i + 1) (n - i - 1))) (genList (i: i) n);
      cidrOK = c: builtins.match "([0-9]+\\.){3}[0-9]+/([0-9]|[12][0-9]|30)" c != null;
    in
    concatMap
      (name:
        (if builtins.stringLength name > 15 || builtins.match "[A-Za-z0-9_.-]+" name == null
        then [ "bridge ${name}: not an interface name (at most 15 of A-Z, a-z, 0-9, _ . -)" ] else [ ])
        ++ (if cidrOK bridges.${name}.cidr then [ ] else [ "bridge ${name}: ${bridges.${name}.cidr} is not an IPv4 prefix of length 30 or less" ]))
      names
    ++ concatMap
      (p:
        let x = bridges.${p.a}; y = bridges.${p.b}; in
        if cidrOK x.cidr && cidrOK y.cidr && util.overlaps x.cidr y.cidr
        then [ "bridges ${p.a} (${x.owner}, ${x.cidr}) and ${p.b} (${y.owner}, ${y.cidr}) overlap" ] else [ ])
      pairs;

  # gateways: each bridge's host address.
  gateways = bridges: map (n: util.gateway bridges.${n}.cidr) (attrNames bridges);

  # sysctls: boot.kernel.sysctl of a host running untrusted guests.
  sysctls = { harden, nested ? false }:
    { "net.ipv4.ip_forward" = 1; }
    // util.optionalAttrs harden {
      "kernel.kptr_restrict" = 2;
      "kernel.dmesg_restrict" = 1;
      "kernel.unprivileged_bpf_disabled" = 1;
      "net.core.bpf_jit_harden" = 2;
      "kernel.yama.ptrace_scope" = 1;
      "net.ipv4.conf.all.accept_redirects" = 0;
      "net.ipv4.conf.default.accept_redirects" = 0;
      "net.ipv4.conf.all.send_redirects" = 0;
      "net.ipv4.conf.all.rp_filter" = 1;
      "net.ipv4.conf.default.rp_filter" = 1;
    };

  # dnsmasq: the guests' resolver's settings (services.dnsmasq.settings):
  # answers only on the bridges, hands out no addresses.
  dnsmasq = { bridges, upstreams }:
    {
      interface = attrNames bridges;
      bind-dynamic = true; # the orchestrators create the bridges later
      except-interface = "lo";
      no-dhcp-interface = attrNames bridges;
      domain-needed = true;
      bogus-priv = true;
    }
    // util.optionalAttrs (upstreams != [ ]) { no-resolv = true; server = upstreams; };

  # scrapeTargets faces: the metrics listener of each enabled orchestrator
  # (its options: enable, metricsListen; "" is off) as Prometheus scrapes
  # it: an unspecified address (":9464", "0.0.0.0:9464", "[::]:9464") is
  # reached on 127.0.0.1.
  scrapeTargets = faces:
    let
      target = listen:
        let m = builtins.match "(.*):([0-9]+)" listen; in
        if m != null && builtins.elem (builtins.head m) [ "" "0.0.0.0" "[::]" ]
        then "127.0.0.1:${builtins.elemAt m 1}"
        else listen;
    in
    map (f: target f.metricsListen) (builtins.filter (f: f.enable && f.metricsListen != "") faces);
}
