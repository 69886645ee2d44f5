#!/usr/bin/env bash
# agent-idle-rss.sh [SECONDS] [STEP]: an idle agent's resident memory over
# time, as real processes with the product's defaults. It starts `harmony
# server` (TLS on, NATS identities on) on a temporary data directory and two
# enrolled agents, one the agent-only build (bin/harmony-agent) and one the
# full binary (bin/harmony), applies one deployment (a File on each), and
# prints VmRSS of both agents every STEP seconds (CSV on stdout) for SECONDS
# (default 3600, step 60). docs/BENCHMARKS.md has the results.
set -euo pipefail
secs=${1:-3600}
step=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
make -s -C "$root" build agent >&2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats=127.0.0.1:$(free_port)
http=127.0.0.1:$(free_port)
"$root/bin/harmony" server --data-dir "$work/server" --nats "$nats" --http "$http" --log-level warn 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/server/admin-token" ] && curl -sf --cacert "$work/server/tls/ca.pem" "https://$http/readyz" >/dev/null && break; sleep 0.2; done
export HARMONY_SERVER=https://$http HARMONY_CA=$work/server/tls/ca.pem HARMONY_TOKEN=$(cat "$work/server/admin-token")
started=
start_agent() { # id binary: sets $started to the agent's pid
	local id=$1 bin=$2 tok
	tok=$("$root/bin/harmony" token create --device "$id" 2>/dev/null)
	"$bin" enroll --id "$id" --nkey "$work/$id.nk" --token "$tok" >&2
	mkdir -p "$work/$id-root"
	"$bin" agent --id "$id" --nats-url "nats://$nats" --nats-ca "$HARMONY_CA" --nats-nkey "$work/$id.nk" \
		--state-dir "$work/$id-state" --http "" --label "bench=idle" >"$work/$id.log" 2>&1 &
	started=$!
	pids+=("$started")
}
start_agent idle-agent-only "$root/bin/harmony-agent"
a=$started
start_agent idle-full "$root/bin/harmony"
f=$started
cat >"$work/dep.yaml" <<YAML
apiVersion: harmony/v1alpha1
kind: Deployment
metadata: {name: idle}
spec:
  selector: {matchLabels: {bench: idle}}
  resources:
  - id: motd
    kind: File
    spec: {path: $work/motd, content: "idle\n"}
YAML
"$root/bin/harmony" apply -f "$work/dep.yaml" >&2
rss() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
echo "seconds,agent_only_rss_mib,full_rss_mib"
t=0
while [ "$t" -le "$secs" ]; do
	echo "$t,$(rss "$a"),$(rss "$f")"
	[ "$t" -ge "$secs" ] && break
	sleep "$step"
	t=$((t + step))
done
