#!/usr/bin/env bash
# Builds the Debian bookworm runner root for Gitea/Forgejo Actions from
# Debian's apt alone (no container registry is needed): debootstrap with
# docker.io, git, ca-certificates, nodejs (for `uses:` actions) and the
# Gitea runner from build-peers' cache as /usr/bin/act_runner, the user
# "runner" (1001) in the groups docker and runner. The result is a plain
# tar of the root file system, cached by the hash of this script and the
# runner binary; the e2e rig packs it as a one-layer OCI image and pushes
# it to the test's registry (images/debian/README.md).
#
# Usage: images/debian/build.sh [CACHE_DIR]   prints the tar's path
# Needs root and debootstrap (scripts/install-deps.sh installs it).
set -euo pipefail

cache=${1:-${FIREACTIONS_CACHE:-$HOME/.cache/fireactions}}
RUNNER_VERSION=v1.0.8
runner="$cache/runner-$RUNNER_VERSION/act_runner"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
packages=docker.io,git,ca-certificates,nodejs,iptables,bash,procps

[ -x "$runner" ] || { echo "no $runner: run scripts/build-peers.sh first" >&2; exit 1; }
key=$( (cat "$0"; sha256sum "$runner"; echo "$mirror $suite $packages") | sha256sum | cut -c1-16)
out="$cache/images/gitea-bookworm-$key.tar"
if [ -s "$out" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache/images"
tmp=$(mktemp -d "$cache/images/build.XXXXXX")
# A failed debootstrap may leave its mounts in the root: unmount them, and
# never let rm cross into a mount. A failed tar leaves no half archive.
cleanup() {
  for m in proc sys dev/pts dev; do umount -R "$tmp/root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$tmp"
  rm -f "$out.tmp"
}
trap cleanup EXIT
root="$tmp/root"
echo "debootstrapping $suite with $packages into $root (minutes, once)" >&2
# --foreign, then the second stage with a policy-rc.d in place: the
# packages' maintainer scripts must not start dockerd on the build host.
debootstrap --foreign --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >&2
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
chroot "$root" /debootstrap/debootstrap --second-stage >&2
rm -f "$root/usr/sbin/policy-rc.d"

install -m 755 "$runner" "$root/usr/bin/act_runner"
chroot "$root" getent group docker >/dev/null || chroot "$root" groupadd --system docker
chroot "$root" groupadd --gid 1001 runner
chroot "$root" useradd --uid 1001 --gid 1001 --groups docker --create-home --shell /bin/bash runner
# Smaller: no apt lists, caches, docs or locales the runner never reads.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/debootstrap
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
: > "$root/etc/machine-id"
tar --numeric-owner --xattrs --sort=name -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
