#!/usr/bin/env bash
# CPU demo on the kind cluster, run by `make demo-kind` after it installs the
# chart. It applies a DisaggregatedDeployment and waits until it is Available.
# Then it replays load through a port-forward to the router while
# `kubectl get dd -w` shows the pools scale, and watches the scale-down until
# Ctrl-C.
#
# Usage: deploy/kind/demo.sh EXAMPLE.yaml
# Environment: KUBE_CONTEXT (default kind-disagg), DISAGG (the disagg command),
# DEMO_PORT (local port, default 18000), DEMO_REQUESTS (default 60),
# DEMO_REPLAY_ARGS (more `disagg replay` options, e.g. "--trace FILE").
set -euo pipefail

example=${1:?usage: deploy/kind/demo.sh EXAMPLE.yaml}
context=${KUBE_CONTEXT:-kind-disagg}
disagg=${DISAGG:-disagg}
port=${DEMO_PORT:-18000}
requests=${DEMO_REQUESTS:-60}
kubectl=(kubectl --context "$context")

# `apply -o name` prints KIND.GROUP/NAME of the applied resource.
resource=$("${kubectl[@]}" apply -f "$example" -o name)
name=${resource#*/}
namespace=$("${kubectl[@]}" get -f "$example" -o jsonpath='{.metadata.namespace}')
namespace=${namespace:-default}
echo "waiting for $resource in $namespace to become Available"
"${kubectl[@]}" -n "$namespace" wait --for=condition=Available "$resource" --timeout=15m

background=()
stop_background() {
    for pid in "${background[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap stop_background EXIT

"${kubectl[@]}" -n "$namespace" port-forward --address 127.0.0.1 "svc/$name-router" "$port:8000" \
    >/dev/null &
background+=($!)
forwarded=false
for _ in $(seq 60); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        forwarded=true
        break
    fi
    sleep 1
done
if [[ $forwarded != true ]]; then
    echo "port-forward to svc/$name-router did not open 127.0.0.1:$port within 60 s" >&2
    exit 1
fi

"${kubectl[@]}" -n "$namespace" get dd -w &
watch=$!
background+=("$watch")

# DEMO_REPLAY_ARGS is split into words on purpose.
# shellcheck disable=SC2086
"$disagg" replay --url "http://127.0.0.1:$port" --max-requests "$requests" --no-progress \
    ${DEMO_REPLAY_ARGS:-}

echo "load finished; watching the pools scale back down (Ctrl-C to stop)"
wait "$watch"
