#!/usr/bin/env bash
# Prints the vendorHash nixpkgs' buildGoModule checks for this module:
# the NAR sha256 of the `vendor` directory its goModules derivation
# builds (pkgs/build-support/go/module.nix: `go mod vendor` with
# GO111MODULE=on and GOTOOLCHAIN=local, no GOFLAGS, then `cp -r vendor
# $out`, a recursive fixed-output hash), in SRI form.
#
#   scripts/vendor-hash.sh [--check FILE.nix] [MODULE_DIR]
#
# MODULE_DIR (default: the repository) holds go.mod and go.sum. With
# --check, the hash is compared with the `vendorHash = "..."` of FILE.nix
# and the script exits 1 naming both when they differ.
#
# Needs the Go go.mod asks for (GOTOOLCHAIN=local refuses another, as the
# Nix build does) and Nix's nix-hash (2.8 has no --sri: hex, then base64).
set -euo pipefail

check=""
if [ "${1:-}" = "--check" ]; then
  [ $# -ge 2 ] || { echo "vendor-hash: --check needs a .nix file" >&2; exit 2; }
  check=$2
  shift 2
fi
dir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
[ -f "$dir/go.mod" ] || { echo "vendor-hash: no go.mod in $dir" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# go mod vendor -o writes the tree without touching the source; it is the
# same tree `go mod vendor` writes into ./vendor.
(
  cd "$dir"
  [ ! -e vendor ] || { echo "vendor-hash: $dir/vendor exists; buildGoModule would refuse it (set vendorHash = null)" >&2; exit 2; }
  env GO111MODULE=on GOTOOLCHAIN=local GOFLAGS= GOWORK=off go mod vendor -o "$work/vendor"
)
if [ -z "$(ls -A "$work/vendor" 2>/dev/null)" ]; then
  echo "vendor-hash: $dir vendors nothing; buildGoModule wants vendorHash = null" >&2
  exit 2
fi

hex=$(nix-hash --type sha256 "$work/vendor")
sri=$(NIX_CONFIG="build-users-group =" nix --extra-experimental-features nix-command \
  hash to-sri --type sha256 "$hex")

if [ -z "$check" ]; then
  echo "$sri"
  exit 0
fi
have=$(sed -n 's/^[[:space:]]*vendorHash[[:space:]]*=[[:space:]]*"\([^"]*\)";.*/\1/p' "$check")
if [ -z "$have" ] || [ "$(printf '%s\n' "$have" | wc -l)" -ne 1 ]; then
  echo "vendor-hash: $check: no single vendorHash = \"...\"; line" >&2
  exit 2
fi
if [ "$have" != "$sri" ]; then
  echo "vendor-hash: $check: vendorHash is $have, but go.mod/go.sum in $dir vendor to $sri" >&2
  exit 1
fi
echo "$sri"
