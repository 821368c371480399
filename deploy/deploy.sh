#!/usr/bin/env bash
# Installs NixOS with the fireactions modules on a machine reachable by
# SSH (nixos-anywhere, with a disko layout per provider) and registers it
# in hosts/registry.json; or deploys the registered fleet (Colmena).
#
#   deploy/deploy.sh install HOST --address ADDR --provider PROVIDER \
#       --tags TAG[,TAG...] [--system SYSTEM] [--admin-key PUBKEY_FILE] \
#       [--identity SSH_KEY] [--dry-run]
#   deploy/deploy.sh apply TARGET [--dry-run]   (TARGET: a host or @tag)
#
# PROVIDER is do, hetzner, generic or bare-metal (deploy/disko/*.nix).
# --dry-run prints every command, one a line after "+ ", and runs none.
# FIREACTIONS_REPO (default: this script's repository) is the flake and
# holds hosts/registry.json.
set -euo pipefail

repo=${FIREACTIONS_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
registry=$repo/hosts/registry.json
nixos_anywhere=github:nix-community/nixos-anywhere
colmena=github:zhaofengli/colmena
providers=("do" hetzner generic bare-metal)
dry_run=false

die() { echo "deploy.sh: $*" >&2; exit 2; }

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# run prints a command and, unless this is a dry run, runs it.
run() {
  local quoted
  printf -v quoted '%q ' "$@"
  echo "+ ${quoted% }"
  if ! $dry_run; then
    "$@"
  fi
}

# run_to FILE CMD...: run with stdout to FILE.
run_to() {
  local file=$1 quoted
  shift
  printf -v quoted '%q ' "$@"
  echo "+ ${quoted% } > $(printf '%q' "$file")"
  if ! $dry_run; then
    "$@" >"$file"
  fi
}

# check_registry FILE: nix/lib/hive.nix's errors for a candidate
# registry (the checks the flake makes when it evaluates hosts/hive.nix);
# any error stops the install, naming the file and each host's field.
check_registry() {
  local file=$1 quoted out
  local expr='{ lib, file }: (import lib).hive.errors (builtins.fromJSON (builtins.readFile file))'
  local cmd=(nix-instantiate --eval --strict --json --argstr lib "$repo/nix/lib" --argstr file "$file" -E "$expr")
  printf -v quoted '%q ' "${cmd[@]}"
  echo "+ ${quoted% }"
  $dry_run && return 0
  out=$("${cmd[@]}") || die "cannot evaluate nix/lib/hive.nix errors on the new hosts/registry.json (see above); hosts/registry.json is unchanged"
  if [ "$out" != "[]" ]; then
    echo "deploy.sh: hosts/registry.json would be invalid, left unchanged:" >&2
    jq -r '.[] | "  " + .' <<<"$out" >&2
    exit 2
  fi
}

# track_hardware HOST: a flake in a git work tree sees only the files git
# knows, so hosts/HOST/hardware.nix, which nixos-anywhere writes during
# the install and the flake's evaluation right after needs, is known to
# git (intent to add, nothing staged) before nixos-anywhere runs. Until
# nixos-anywhere overwrites it, it holds an empty module.
track_hardware() {
  local file=$repo/hosts/$1/hardware.nix
  if ! git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "# $repo is not a git work tree: the flake sees every file, hardware.nix included"
    return 0
  fi
  if [ ! -e "$file" ]; then
    run_to "$file" echo "{ } # replaced by nixos-anywhere --generate-hardware-config (deploy/deploy.sh)"
  fi
  run git -C "$repo" add --intent-to-add -- "hosts/$1/hardware.nix"
  echo "# hosts/$1/hardware.nix is known to git (git add --intent-to-add), so the flake sees what nixos-anywhere writes there"
}

install_host() {
  local host="" address="" provider="" tags="" system=x86_64-linux admin_key="" identity=""
  [ $# -gt 0 ] || usage
  host=$1
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --address) address=${2:?}; shift 2 ;;
      --provider) provider=${2:?}; shift 2 ;;
      --tags) tags=${2:?}; shift 2 ;;
      --system) system=${2:?}; shift 2 ;;
      --admin-key) admin_key=${2:?}; shift 2 ;;
      --identity) identity=${2:?}; shift 2 ;;
      --dry-run) dry_run=true; shift ;;
      *) die "unknown argument $1" ;;
    esac
  done
  [[ $host =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "$host is not a host name (a-z, 0-9, -)"
  [ -n "$address" ] || die "--address is required"
  [ -n "$tags" ] || die "--tags is required"
  local p ok=false
  for p in "${providers[@]}"; do [ "$p" = "$provider" ] && ok=true; done
  $ok || die "--provider must be one of ${providers[*]}"
  [ -z "$admin_key" ] || [ -r "$admin_key" ] || die "cannot read --admin-key $admin_key"

  local tags_json
  tags_json=$(jq -cn --arg t "$tags" '$t | split(",") | map(select(. != ""))')
  local entry
  entry=$(jq -cn --arg a "$address" --arg p "$provider" --arg s "$system" --argjson t "$tags_json" \
    '{address: $a, provider: $p, system: $s, tags: $t}')
  local ssh_opts=()
  [ -z "$identity" ] || ssh_opts=(-i "$identity")

  # The new registry is written beside the old one (same file system, so
  # the final mv is atomic), checked there, and only then moved over it:
  # a refused registration leaves hosts/registry.json as it was.
  echo "# 1. the new registry, with $host, beside hosts/registry.json"
  local tmp
  if $dry_run; then
    tmp=$repo/hosts/.registry.json.XXXXXX
  else
    tmp=$(mktemp "$repo/hosts/.registry.json.XXXXXX")
    # shellcheck disable=SC2064 # expand $tmp now: it is local
    trap "rm -f $(printf %q "$tmp")" EXIT
  fi
  run cp -p "$registry" "$tmp" # its mode and owner; jq then writes the content
  # shellcheck disable=SC2016 # $h, $e and $k are jq's variables
  if [ -n "$admin_key" ]; then
    run_to "$tmp" jq --arg h "$host" --argjson e "$entry" --arg k "$(tr -d '\n' <"$admin_key")" \
      '.hosts[$h] = $e | .fleet.adminKeys = ((.fleet.adminKeys // []) + [$k] | unique)' "$registry"
  else
    run_to "$tmp" jq --arg h "$host" --argjson e "$entry" '.hosts[$h] = $e' "$registry"
  fi

  echo "# 2. check it as the flake will (nix/lib/hive.nix errors: tags known, profiles compatible), then keep it"
  check_registry "$tmp"
  run mv "$tmp" "$registry"

  echo "# 3. reach the machine"
  run ssh "${ssh_opts[@]}" -o BatchMode=yes "root@$address" true

  echo "# 4. install NixOS (disko layout deploy/disko/$provider.nix), keep its hardware configuration"
  run mkdir -p "$repo/hosts/$host"
  track_hardware "$host"
  run nix --extra-experimental-features 'nix-command flakes' run "$nixos_anywhere" -- \
    --flake "$repo#$host" \
    --generate-hardware-config nixos-generate-config "$repo/hosts/$host/hardware.nix" \
    --target-host "root@$address" "${ssh_opts[@]}"

  echo "# 5. the host's age key, for .sops.yaml (then: sops secrets/$host.yaml)"
  run_to "$repo/hosts/$host/ssh_host_ed25519_key.pub" ssh "${ssh_opts[@]}" "root@$address" cat /etc/ssh/ssh_host_ed25519_key.pub
  run nix --extra-experimental-features 'nix-command flakes' run nixpkgs#ssh-to-age -- -i "$repo/hosts/$host/ssh_host_ed25519_key.pub"
  echo "# then: git add hosts/registry.json hosts/$host .sops.yaml secrets/$host.yaml"
}

apply() {
  local target=""
  while [ $# -gt 0 ]; do
    case $1 in
      --dry-run) dry_run=true; shift ;;
      -*) die "unknown argument $1" ;;
      *) [ -z "$target" ] || die "one TARGET only"; target=$1; shift ;;
    esac
  done
  [ -n "$target" ] || die "apply needs a TARGET (a host or @tag)"
  run nix --extra-experimental-features 'nix-command flakes' run "$colmena" -- apply --impure --on "$target" -f "$repo"
}

[ $# -gt 0 ] || usage
command=$1
shift
case $command in
  install) install_host "$@" ;;
  apply) apply "$@" ;;
  -h|--help|help) usage ;;
  *) die "unknown command $command (install or apply)" ;;
esac
