#!/usr/bin/env bash
# Throughput and p99 of cache hits vs uncached passthrough, through one gateway in one run
# (interleaved wrk rounds, same body, JSONL logging on). All traffic is on 127.0.0.1; every
# wrk run is bounded by `timeout`; every process started here is stopped on exit.
#
#   cargo build --release && bash benches/cache_hit.sh
# Knobs: ROUNDS=3 DURATION=8 CONNS=64 MOCK_PORT=18080 GW_PORT=18094 MOCK_LATENCY_MS=0
#        (MOCK_LATENCY_MS adds provider latency before each uncached answer)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-8}" CONNS="${CONNS:-64}"
MOCK_PORT="${MOCK_PORT:-18080}" GW_PORT="${GW_PORT:-18094}"
WORK="$(mktemp -d /tmp/switchyard-cachebench.XXXXXX)"
source benches/lib.sh
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
[[ -x "$BIN" ]] || { echo "build first: cargo build --release"; exit 1; }
start_mock "$MOCK_PORT" --latency-ms "${MOCK_LATENCY_MS:-0}"
cat >"$WORK/switchyard.yaml" <<YAML
server: {threads: 1, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 5, pid_file: $WORK/pid, upgrade_sock: $WORK/upgrade.sock}
listeners: [{address: '127.0.0.1:$GW_PORT'}]
origins: [{url: 'http://127.0.0.1:$MOCK_PORT', approved: true, allow_private: true}]
state_dir: $WORK/state
export: {jsonl: {dir: $WORK/logs}}
YAML
RUST_LOG=warn "$BIN" -c "$WORK/switchyard.yaml" >"$WORK/gw.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
wait_ready "$GW_PORT" "$MOCK_PORT"
target="Helicone-Target-Url: http://127.0.0.1:$MOCK_PORT"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$GW_PID/stat"; }
run() { # headers -> "rps p99_ms non2xx gateway_cpu_us_per_request"
  local out t0 t1
  t0=$(cpu_ticks)
  out=$(BENCH_HEADERS="$1" timeout $((DURATION + 10)) wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        -s "$BENCH/wrk/post_chat.lua" "http://127.0.0.1:$GW_PORT/v1/chat/completions" 2>&1)
  t1=$(cpu_ticks)
  local j; j=$(echo "$out" | sed -n 's/^BENCHJSON //p')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["rps"], d["p99_ms"], sys.argv[2], round((int(sys.argv[3]) / int(sys.argv[4])) * 1e6 / d["requests"], 1))' \
    "$j" "${non2xx:-0}" "$((t1 - t0))" "$(getconf CLK_TCK)"
}
# warm-up (the first cached request fills the entry)
DURATION=2 run "$target" >/dev/null; DURATION=2 run "$target|Helicone-Cache-Enabled: true" >/dev/null
echo "round | passthrough req/s | p99 ms | gateway CPU µs/req | cache HIT req/s | p99 ms | gateway CPU µs/req"
declare -a pr hr pp hp pc hc
for r in $(seq 1 "$ROUNDS"); do
  read -r a ap ae ac < <(run "$target"); read -r b bp be bc < <(run "$target|Helicone-Cache-Enabled: true")
  [[ "$ae" == 0 && "$be" == 0 ]] || echo "non-2xx answers: passthrough $ae, hits $be"
  pr+=("$a"); hr+=("$b"); pp+=("$ap"); hp+=("$bp"); pc+=("$ac"); hc+=("$bc")
  echo "$r | $a | $ap | $ac | $b | $bp | $bc"
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
a=$(med "${pr[@]}") b=$(med "${hr[@]}") ap=$(med "${pp[@]}") bp=$(med "${hp[@]}") ac=$(med "${pc[@]}") bc=$(med "${hc[@]}")
echo "median: passthrough $a req/s (p99 $ap ms, $ac µs CPU), hits $b req/s (p99 $bp ms, $bc µs CPU); hit/passthrough throughput = $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b / a}')"
echo "mock: $(curl -s "http://127.0.0.1:$MOCK_PORT/stats")"
