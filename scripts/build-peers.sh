#!/usr/bin/env bash
# Builds the real peers the tests and the demo run against -- Gitea, the
# Gitea runner and nats-server (the fleet's) -- from the Go module proxy
# into a cache directory, once.
# Usage: scripts/build-peers.sh [CACHE_DIR]   (prints nothing on a warm cache)
set -euo pipefail

GITEA_VERSION=v1.26.0
RUNNER_VERSION=v1.0.8
NATS_VERSION=v2.15.3
cache=${1:-${FIREACTIONS_CACHE:-$HOME/.cache/fireactions}}
mkdir -p "$cache"

moddir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

if [ ! -x "$cache/gitea-$GITEA_VERSION/gitea" ]; then
  echo "building Gitea $GITEA_VERSION into $cache (a few minutes, once)" >&2
  src=$(moddir "code.gitea.io/gitea@$GITEA_VERSION")
  tmp=$(mktemp -d "$cache/gitea-build.XXXXXX")
  cp -r "$src/." "$tmp/src"
  chmod -R u+w "$tmp/src"
  (cd "$tmp/src" && CGO_ENABLED=1 go build -tags 'sqlite sqlite_unlock_notify' \
      -ldflags "-s -w -X main.Version=${GITEA_VERSION#v}" -o "$tmp/gitea" .)
  # Gitea without bindata serves templates and locales from its source tree.
  rm -rf "$cache/gitea-$GITEA_VERSION"
  mkdir -p "$cache/gitea-$GITEA_VERSION"
  mv "$tmp/src" "$cache/gitea-$GITEA_VERSION/static"
  mv "$tmp/gitea" "$cache/gitea-$GITEA_VERSION/gitea"
  rm -rf "$tmp"
fi

if [ ! -x "$cache/runner-$RUNNER_VERSION/act_runner" ]; then
  echo "building the Gitea runner $RUNNER_VERSION (static) into $cache" >&2
  src=$(moddir "gitea.com/gitea/runner@$RUNNER_VERSION")
  mkdir -p "$cache/runner-$RUNNER_VERSION"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X gitea.com/gitea/runner/internal/pkg/ver.version=$RUNNER_VERSION" \
      -o "$cache/runner-$RUNNER_VERSION/act_runner.tmp" .)
  mv "$cache/runner-$RUNNER_VERSION/act_runner.tmp" "$cache/runner-$RUNNER_VERSION/act_runner"
fi

if [ ! -x "$cache/nats-server-$NATS_VERSION/nats-server" ]; then
  echo "building nats-server $NATS_VERSION (static) into $cache" >&2
  src=$(moddir "github.com/nats-io/nats-server/v2@$NATS_VERSION")
  mkdir -p "$cache/nats-server-$NATS_VERSION"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
      -o "$cache/nats-server-$NATS_VERSION/nats-server.tmp" .)
  mv "$cache/nats-server-$NATS_VERSION/nats-server.tmp" "$cache/nats-server-$NATS_VERSION/nats-server"
fi
