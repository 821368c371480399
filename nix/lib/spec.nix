# A tiny option language in plain Nix. The modules' options are declared
# once, as data (options.nix); nix/modules/options.nix turns them into
# lib.mkOption calls, docs/nixos.md is generated from them, and the checks
# here fill defaults and type-check plain option values (profiles, hosts,
# the documentation's examples) without nixpkgs.
#
# Types: "bool" "str" "int" "port" "path" "package" "json" (a JSON-like
# attribute set, RFC 42 settings), { enum = [ ... ]; }, { nullOr = t; },
# { listOf = t; }, { attrsOf = t; }, { submodule = { name = option; }; }.
{ util }:
let
  inherit (builtins) isAttrs isString isInt isBool isList isPath attrNames elem concatStringsSep toJSON;
in
rec {
  # option declares one option. default may be left out only when
  # defaultText says what the module computes instead.
  option = args@{ type, description, ... }: args // { _option = true; };

  isOption = x: isAttrs x && x._option or false;

  # describe is a type's name as the NixOS manual writes it.
  describe = t:
    if isString t then
      {
        bool = "boolean";
        str = "string";
        int = "signed integer";
        port = "16 bit unsigned integer; between 0 and 65535 (both inclusive)";
        path = "absolute path";
        package = "package";
        json = "JSON value";
      }.${t}
    else if t ? enum then "one of ${concatStringsSep ", " (map toJSON t.enum)}"
    else if t ? nullOr then "null or ${describe t.nullOr}"
    else if t ? listOf then "list of ${describe t.listOf}"
    else if t ? attrsOf then "attribute set of ${describe t.attrsOf}"
    else if t ? submodule then "submodule"
    else throw "unknown option type ${toJSON t}";

  # typeErrors: the problems of value v of type t at path p (a string).
  typeErrors = t: p: v:
    let bad = [ "${p}: ${toJSON v} is not a ${describe t}" ];
    in
    if isString t then
      (if t == "bool" then (if isBool v then [ ] else bad)
      else if t == "str" then (if isString v then [ ] else bad)
      else if t == "int" then (if isInt v then [ ] else bad)
      else if t == "port" then (if isInt v && v >= 0 && v <= 65535 then [ ] else bad)
      else if t == "path" then (if isPath v || (isString v && builtins.substring 0 1 v == "/") then [ ] else bad)
      else if t == "package" then [ ]
      else if t == "json" then (if isAttrs v then [ ] else bad)
      else throw "unknown option type ${t}")
    else if t ? enum then (if elem v t.enum then [ ] else bad)
    else if t ? nullOr then (if v == null then [ ] else typeErrors t.nullOr p v)
    else if t ? listOf then
      (if isList v then util.concatMap (i: typeErrors t.listOf "${p}.${toString i}" (builtins.elemAt v i)) (builtins.genList (i: i) (builtins.length v)) else bad)
    else if t ? attrsOf then
      (if isAttrs v then util.concatMap (k: typeErrors t.attrsOf "${p}.${k}" v.${k}) (attrNames v) else bad)
    else if t ? submodule then
      (if isAttrs v then check t.submodule p v else bad)
    else throw "unknown option type ${toJSON t}";

  # check: the problems of an option value against a group of options:
  # unknown names (with the known ones), and values of the wrong type.
  check = group: p: v:
    util.concatMap
      (k:
        let
          s = group.${k} or null;
          p' = if p == "" then k else "${p}.${k}";
        in
        if s == null then [ "${p'}: no such option (known: ${concatStringsSep ", " (attrNames group)})" ]
        else if isOption s then typeErrors s.type p' v.${k}
        else if isAttrs v.${k} then check s p' v.${k}
        else [ "${p'}: ${toJSON v.${k}} is not an attribute set of options" ])
      (attrNames v);

  # withDefaults fills what v leaves out from the group's defaults, as the
  # module system would. Options without a default (defaultText only) stay
  # out; so do read-only ones.
  withDefaults = group: v:
    builtins.listToAttrs (util.concatMap
      (k:
        let s = group.${k}; in
        if isOption s then
          (if v ? ${k} then [{ name = k; value = fillType s.type v.${k}; }]
          else if s ? default then [{ name = k; value = s.default; }]
          else [ ])
        else [{ name = k; value = withDefaults s (v.${k} or { }); }])
      (attrNames group));

  fillType = t: v:
    if isAttrs t && t ? submodule then withDefaults t.submodule v
    else if isAttrs t && t ? attrsOf && v != null then builtins.mapAttrs (_: fillType t.attrsOf) v
    else if isAttrs t && t ? listOf && v != null then map (fillType t.listOf) v
    else if isAttrs t && t ? nullOr && v != null then fillType t.nullOr v
    else v;

  # rows flattens a group into documentation rows, submodules included
  # (as NAME.<name>.OPTION).
  rows = prefix: group:
    util.concatMap
      (k:
        let
          s = group.${k};
          name = "${prefix}.${k}";
          sub = t: if !isAttrs t then null
            else if t ? submodule then { p = ""; g = t.submodule; }
            else if t ? attrsOf then (let r = sub t.attrsOf; in if r == null then null else r // { p = ".<name>${r.p}"; })
            else if t ? nullOr then sub t.nullOr
            else null;
        in
        if isOption s then
          [{
            inherit name;
            type = describe s.type;
            default =
              if s ? defaultText then s.defaultText
              else if s ? default then toJSON s.default
              else "—";
            description = s.description;
            readOnly = s.readOnly or false;
          }] ++ (let r = sub s.type; in if r == null then [ ] else rows "${name}${r.p}" r.g)
        else rows name s)
      (attrNames group);
}
