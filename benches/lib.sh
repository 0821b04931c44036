# Shared by the bench scripts (sourced): a work folder, processes stopped on exit, the shared mock
# provider (../shared/bench/mock-upstream, built on first use) and a readiness wait. 127.0.0.1 only.
BENCH="$(cd ../shared/bench && pwd)"
BIN="$PWD/target/release/switchyard"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_mock PORT [mock-upstream flags...]: the mock, in the background, logging to $WORK/mock.log
start_mock() {
  local port=$1
  shift
  local mock_bin="${BENCH_TARGET_DIR:-/tmp/bench-target}/release/mock-upstream"
  if [[ ! -x "$mock_bin" ]]; then
    (cd "$BENCH/mock-upstream" && CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-/tmp/bench-target}" cargo build --release -q)
  fi
  "$mock_bin" --port "$port" --threads 1 "$@" >"$WORK/mock.log" 2>&1 &
  PIDS+=($!)
}

# wait_ready PORT...: until each answers its health check (10 s at most each)
wait_ready() {
  for port in "$@"; do
    for _ in $(seq 1 100); do
      curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
      curl -s -o /dev/null "http://127.0.0.1:$port/health" && break
      sleep 0.1
    done
  done
}
