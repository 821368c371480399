#!/usr/bin/env bash
# The demo: a real Gitea and fireactions in a private network namespace; a
# pushed workflow runs in its own QEMU microVM, its log line is printed, and
# everything is torn down. Run through `make demo` (it builds what this
# needs). Needs root for the namespace, the bridge and the TAPs.
set -euo pipefail

cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (network namespace, bridge, TAPs)" >&2; exit 1; }

CACHE=${FIREACTIONS_CACHE:-$HOME/.cache/fireactions}
GITEA_DIR=$CACHE/gitea-v1.26.0
RUNNER=$CACHE/runner-v1.0.8/act_runner
NS=fademo
PORT=3000
CIDR=10.202.0.0/24
GW=10.202.0.1
KERNEL=$(find /boot -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' | sort | tail -n 1)
[ -n "$KERNEL" ] || { echo "demo: no Debian cloud kernel in /boot (make deps)" >&2; exit 1; }
MODULES=/lib/modules/${KERNEL#/boot/vmlinuz-}
W=$(mktemp -d /tmp/fireactions-demo.XXXXXX)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
inns() { ip netns exec "$NS" "$@"; }

say "network namespace $NS"
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up

say "Gitea v1.26.0 (built from the Go module proxy into $CACHE)"
mkdir -p "$W/gitea"
cat > "$W/gitea/app.ini" <<INI
RUN_MODE = prod
RUN_USER = root
WORK_PATH = $W/gitea
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
[server]
HTTP_ADDR = 0.0.0.0
HTTP_PORT = $PORT
ROOT_URL = http://127.0.0.1:$PORT/
DISABLE_SSH = true
OFFLINE_MODE = true
STATIC_ROOT_PATH = $GITEA_DIR/static
[database]
DB_TYPE = sqlite3
PATH = $W/gitea/data/gitea.db
[security]
INSTALL_LOCK = true
[repository]
ROOT = $W/gitea/repos
DEFAULT_BRANCH = main
[actions]
ENABLED = true
[log]
MODE = console
LEVEL = warn
[cron.update_checker]
ENABLED = false
INI
G=("$GITEA_DIR/gitea" --config "$W/gitea/app.ini" --work-path "$W/gitea")
"${G[@]}" migrate >/dev/null 2>&1
"${G[@]}" admin user create --username demo --password 'demo-Passw0rd!' --email demo@example.invalid \
  --admin --must-change-password=false >/dev/null 2>&1
TOKEN=$("${G[@]}" admin user generate-access-token --username demo --token-name demo --scopes all --raw 2>/dev/null | tail -n 1)
ip netns exec "$NS" "${G[@]}" web > "$W/gitea/web.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do inns curl -sf "http://127.0.0.1:$PORT/api/v1/version" >/dev/null && break; sleep 0.1; done
echo "gitea: $(inns curl -sf "http://127.0.0.1:$PORT/api/v1/version")"
api() { inns curl -sf -H "Authorization: token $TOKEN" -H 'Content-Type: application/json' "$@"; }

say "guest root: busybox, bash and the Gitea runner v1.0.8"
bin/fireactions guest-root --runner "$RUNNER" -o "$W/root.cpio.gz"

say "fireactions serve: one QEMU pool, min_idle 1, max 2"
umask 077
printf '%s\n' "$TOKEN" > "$W/gitea-token"
cat > "$W/fireactions.yaml" <<YAML
host_id: demo
state_dir: $W/state
network:
  bridge: fademo0
  cidr: $CIDR
  allow_tcp_ports: [$PORT]   # Gitea runs on the gateway in the demo
forges:
  - name: gitea
    type: gitea
    url: http://127.0.0.1:$PORT
    guest_url: http://$GW:$PORT
    token_file: $W/gitea-token
pools:
  - name: demo
    forge: gitea
    scope: instance
    labels: [fireactions]
    min_idle: 1
    max: 2
    vm:
      kernel: $KERNEL
      modules_dir: $MODULES
      kernel_modules: [virtio_mmio, virtio_net]
      root_initramfs: $W/root.cpio.gz
YAML
bin/fireactions validate "$W/fireactions.yaml"
ip netns exec "$NS" bin/fireactions serve "$W/fireactions.yaml" > "$W/fireactions.log" 2>&1 &
FA=$!
pids+=("$FA")

say "push a workflow"
api -X POST -d '{"name":"hello","default_branch":"main"}' "http://127.0.0.1:$PORT/api/v1/user/repos" >/dev/null
mkdir -p "$W/repo/.gitea/workflows"
cat > "$W/repo/.gitea/workflows/hello.yml" <<'WF'
on: [push]
jobs:
  hello:
    runs-on: fireactions
    steps:
      - run: echo "hello from microVM $(hostname), kernel $(uname -r), user $(id -un)"
WF
git -C "$W/repo" init -q -b main
git -C "$W/repo" add -A
git -C "$W/repo" -c user.name=demo -c user.email=demo@example.invalid commit -qm "hello workflow"
inns git -C "$W/repo" push -q "http://demo:$TOKEN@127.0.0.1:$PORT/demo/hello.git" main

say "wait for the run"
status=""
for _ in $(seq 900); do
  status=$(api "http://127.0.0.1:$PORT/api/v1/repos/demo/hello/actions/runs" | jq -r '.workflow_runs[0] | "\(.status) \(.conclusion)"' 2>/dev/null || true)
  case "$status" in completed*) break ;; esac
  sleep 0.2
done
echo "run: $status"
JOB=$(api "http://127.0.0.1:$PORT/api/v1/repos/demo/hello/actions/jobs" | jq -r '.jobs[0].id')
echo "log line from inside the microVM:"
api "http://127.0.0.1:$PORT/api/v1/repos/demo/hello/actions/jobs/$JOB/logs" | grep -E 'hello from microVM' | grep -v 'echo' || true

say "drain (SIGTERM) and tear down"
kill -TERM "$FA"
rc=0
wait "$FA" || rc=$?
pids=("${pids[@]/$FA}")
if [ "$rc" -eq 0 ]; then
  echo "fireactions drained and exited 0"
else
  echo "fireactions exited $rc; its log:"
  tail -n 40 "$W/fireactions.log"
fi
echo "runners left in Gitea: $(api "http://127.0.0.1:$PORT/api/v1/admin/actions/runners" | jq -r .total_count)"
grep -E 'runner-ready|vm gone' "$W/fireactions.log" | sed 's/^/  /' | cut -c1-200
[ "$status" = "completed success" ]
