# Turns the option data of nix/lib/options.nix into lib.mkOption calls, so
# the modules declare exactly what docs/nixos.md documents.
{ lib, pkgs }:
let
  inherit (lib) types mkOption optionalAttrs mapAttrs;
  json = (pkgs.formats.json { }).type;

  toType = t:
    if builtins.isString t then
      {
        bool = types.bool;
        str = types.str;
        int = types.int;
        port = types.port;
        # A string, never a Nix path literal: a literal would copy the file
        # (a secret, say) into the world-readable store.
        path = types.strMatching "/.*";
        package = types.package;
        inherit json;
      }.${t}
    else if t ? enum then types.enum t.enum
    else if t ? nullOr then types.nullOr (toType t.nullOr)
    else if t ? listOf then types.listOf (toType t.listOf)
    else if t ? attrsOf then types.attrsOf (toType t.attrsOf)
    else if t ? submodule then types.submodule { options = toOptions t.submodule { }; }
    else throw "unknown option type ${builtins.toJSON t}";

  # toOptions group dynamic: the options of a group; dynamic holds the
  # defaults only the module can compute (packages), in the same shape.
  toOptions = group: dynamic:
    mapAttrs
      (k: s:
        if s._option or false then
          mkOption ({
            type = toType s.type;
            inherit (s) description;
          }
          // optionalAttrs (s ? default) { inherit (s) default; }
          // optionalAttrs (dynamic ? ${k}) { default = dynamic.${k}; }
          // optionalAttrs (s ? defaultText) { defaultText = lib.literalMD s.defaultText; }
          // optionalAttrs (s.readOnly or false) { readOnly = true; })
        else toOptions s (dynamic.${k} or { }))
      group;
in
toOptions
