# Small helpers over builtins, for the plain-Nix layer (no nixpkgs lib).
rec {
  # recursiveMerge a b: b's values win; attribute sets merge, all else
  # (lists too) is replaced.
  recursiveMerge = a: b:
    a // builtins.mapAttrs
      (k: v: if builtins.isAttrs v && builtins.isAttrs (a.${k} or null) then recursiveMerge a.${k} v else v)
      b;

  # filterNulls drops the attributes whose value is null.
  filterNulls = s: removeAttrs s (builtins.filter (k: s.${k} == null) (builtins.attrNames s));

  optionalAttrs = cond: s: if cond then s else { };
  optional = cond: x: if cond then [ x ] else [ ];

  concatMap = f: l: builtins.concatLists (map f l);

  # unique keeps the first of equal elements.
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];

  chars = s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);

  # sanitizeHostID is the binary's default host_id from a hostname: lower
  # case, other characters than a-z, 0-9 and '-' turned into '-', no '-' at
  # either end, at most 20 characters.
  sanitizeHostID = hostname:
    let
      lower = builtins.replaceStrings
        (chars "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        (chars "abcdefghijklmnopqrstuvwxyz")
        hostname;
      mapped = builtins.concatStringsSep "" (map (c: if builtins.match "[a-z0-9-]" c != null then c else "-") (chars lower));
      trim = s: let m = builtins.match "-*(.*[^-])-*" s; in if m == null then "" else builtins.head m;
    in
    trim (builtins.substring 0 20 (trim mapped));

  # pow2 n is 2^n.
  pow2 = n: builtins.foldl' (x: _: x * 2) 1 (builtins.genList (i: i) n);

  # parseCIDR "10.200.0.0/24" -> { start; size; len; } (start: the address
  # as an integer, masked), or throws.
  parseCIDR = cidr:
    let
      m = builtins.match "([0-9]+)\\.([0-9]+)\\.([0-9]+)\\.([0-9]+)/([0-9]+)" cidr;
      n = map builtins.fromJSON (if m == null then throw "${cidr} is not an IPv4 CIDR" else m);
      octets = builtins.genList (i: builtins.elemAt n i) 4;
      len = builtins.elemAt n 4;
      addr = builtins.foldl' (acc: o: acc * 256 + o) 0 octets;
      size = pow2 (32 - len);
    in
    if builtins.any (o: o > 255) octets || len > 32 then throw "${cidr} is not an IPv4 CIDR"
    else { start = addr - (mod addr size); inherit size len; };

  mod = a: b: a - (a / b) * b;

  # ipString turns an integer address into dotted form.
  ipString = n:
    builtins.concatStringsSep "." (map (s: toString (mod (n / pow2 s) 256)) [ 24 16 8 0 ]);

  # gateway of a CIDR: its first host address, as the binary derives it.
  gateway = cidr: ipString ((parseCIDR cidr).start + 1);

  # overlaps reports whether two CIDRs share an address.
  overlaps = a: b:
    let x = parseCIDR a; y = parseCIDR b;
    in x.start < y.start + y.size && y.start < x.start + x.size;

  # seconds of a Go duration made of h, m and s parts ("1h30m", "90s").
  durationSeconds = d:
    let
      parts = builtins.filter builtins.isList (builtins.split "([0-9]+)(h|m|s)" d);
      unit = { h = 3600; m = 60; s = 1; };
    in
    if builtins.match "([0-9]+(h|m|s))+" d == null then throw "${d}: want a duration of whole hours, minutes and seconds (such as 1h30m)"
    else builtins.foldl' (acc: p: acc + builtins.fromJSON (builtins.elemAt p 0) * unit.${builtins.elemAt p 1}) 0 parts;
}
