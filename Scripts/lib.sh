# Shared helpers for Scripts/demo and Scripts/bench-*: start nodes, remember their PIDs, and
# stop exactly those PIDs on exit (never by name).
STARLING_PIDS=()

starling_cleanup() {
  for pid in "${STARLING_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.5
  for pid in "${STARLING_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done
  [ -n "${STARLING_WORK:-}" ] && rm -rf "$STARLING_WORK"
}

# start_node BIN NAME GOSSIP_PORT API_PORT [extra args...]; sets LAST_PID.
start_node() {
  local bin=$1 name=$2 gport=$3 aport=$4
  shift 4
  "$bin" node --name "$name" --gossip "127.0.0.1:$gport" --api "127.0.0.1:$aport" \
    --data "$STARLING_WORK/$name" --key-file "$STARLING_WORK/cluster.key" "$@" \
    >"$STARLING_WORK/$name.log" 2>&1 &
  LAST_PID=$!
  STARLING_PIDS+=("$LAST_PID")
}

# wait_http PORT: until the node's API answers (10 s at most).
wait_http() {
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$1/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node on API port $1 did not come up" >&2
  return 1
}
