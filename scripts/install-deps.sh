#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, when missing:
# QEMU (the microVM monitor), Debian's cloud kernel (the guest kernel),
# static busybox and bash (the guest's tools), nftables and iproute2 (host
# network), git, jq and shellcheck, and Nix (nix-bin: parses and evaluates
# the NixOS layer's plain Nix), e2fsprogs and erofs-utils (OCI image roots
# and the VMs' writable disks), xfsprogs (a reflink file system for the
# initramfs test), Linux 6.1's source with flex, bison, bc and
# make (nix-check configures the guest kernel the way its derivation does),
# debootstrap (images/debian/build.sh: the Docker e2e test's runner image),
# buildah (the test that builds images/docker/Dockerfile.gitea, tag buildah),
# chromium and tesseract-ocr (the status page's end-to-end test loads it
# headless and reads its screenshot back) and
# promtool (checks and unit-tests the alert rules): taken out of Debian's
# prometheus package into /usr/local/bin without installing the package,
# which would start a Prometheus server on a systemd host.
# Runs apt only when something is absent.
set -euo pipefail

pkgs=(qemu-system-x86 linux-image-cloud-amd64 busybox-static bash-static
      nftables iproute2 git jq curl ca-certificates shellcheck gcc nix-bin
      e2fsprogs erofs-utils xfsprogs cpio linux-source-6.1 flex bison bc make xz-utils
      debootstrap buildah chromium tesseract-ocr tesseract-ocr-eng)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v promtool >/dev/null; then
  echo "installing: promtool (from Debian's prometheus package)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cd "$tmp"
  if ! apt-get download -q prometheus >&2; then
    $sudo apt-get update -q
    apt-get download -q prometheus >&2
  fi
  cd - >/dev/null
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  $sudo install -m 0755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
fi
