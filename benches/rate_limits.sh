#!/usr/bin/env bash
# Throughput and gateway CPU per request with rate limits off, with a header policy, and with a
# gateway key's limits (requests + daily budget + concurrency: three checks and a settlement),
# each counted in memory and in Redis, interleaved in one run. The quotas are far above what
# the run sends, so every request is admitted and the cost measured is the counting itself.
# One hot scope is the worst case (every admission takes the same counter). All traffic is on
# 127.0.0.1; every wrk run is bounded by `timeout`; every process started here is stopped on exit.
#
#   cargo build --release && bash benches/rate_limits.sh
# Knobs: ROUNDS=3 DURATION=8 CONNS=64 MOCK_PORT=18080 GW_PORT=18095 (local) GW_PORT+1 (Redis)
#        REDIS_URL=redis://127.0.0.1:6379/0
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-8}" CONNS="${CONNS:-64}"
MOCK_PORT="${MOCK_PORT:-18080}" GW_PORT="${GW_PORT:-18095}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
WORK="$(mktemp -d /tmp/switchyard-rlbench.XXXXXX)"
source benches/lib.sh
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
[[ -x "$BIN" ]] || { echo "build first: cargo build --release"; exit 1; }
start_mock "$MOCK_PORT"
export SWITCHYARD_BENCH_FREE=sk-bench-free SWITCHYARD_BENCH_LIMITED=sk-bench-limited
declare -A GW_PID
for store in local redis; do
  port=$GW_PORT; limits="{}"
  if [[ $store == redis ]]; then
    port=$((GW_PORT + 1))
    limits="{redis: {url: '$REDIS_URL', prefix: 'switchyard-bench-$$:'}}"
  fi
  mkdir -p "$WORK/$store"
  cat >"$WORK/$store/switchyard.yaml" <<YAML
server: {threads: 1, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 5, pid_file: $WORK/$store/pid, upgrade_sock: $WORK/$store/upgrade.sock}
listeners: [{address: '127.0.0.1:$port'}]
origins: [{url: 'http://127.0.0.1:$MOCK_PORT', approved: true, allow_private: true}]
auth:
  keys:
    - {id: free, env: SWITCHYARD_BENCH_FREE}
    - {id: limited, env: SWITCHYARD_BENCH_LIMITED, limits: {requests: 100000000, window_secs: 10, usd_per_day: 1000000, max_concurrent: 10000}}
limits: $limits
state_dir: $WORK/$store/state
export: {jsonl: {dir: $WORK/$store/logs}}
YAML
  RUST_LOG=warn "$BIN" -c "$WORK/$store/switchyard.yaml" >"$WORK/$store/gw.log" 2>&1 &
  GW_PID[$store]=$!
  PIDS+=($!)
  wait_ready "$port"
done
wait_ready "$MOCK_PORT"
target="Helicone-Target-Url: http://127.0.0.1:$MOCK_PORT"
free="$target|Helicone-Auth: Bearer sk-bench-free"
policy="$free|Helicone-RateLimit-Policy: 100000000;w=10"
limited="$target|Helicone-Auth: Bearer sk-bench-limited"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
REDIS_PID=$(pgrep -x redis-server | head -1 || true)
redis_ticks() { if [[ -n "$REDIS_PID" ]]; then cpu_ticks "$REDIS_PID"; else echo 0; fi; }
run() { # store headers -> "rps p99_ms non2xx gateway_cpu_us_per_request redis_cpu_us_per_request"
  local store=$1 port=$GW_PORT pid out t0 t1 r0 r1
  [[ $store == redis ]] && port=$((GW_PORT + 1))
  pid=${GW_PID[$store]}
  t0=$(cpu_ticks "$pid"); r0=$(redis_ticks)
  out=$(BENCH_HEADERS="$2" timeout $((DURATION + 10)) wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        -s "$BENCH/wrk/post_chat.lua" "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
  t1=$(cpu_ticks "$pid"); r1=$(redis_ticks)
  local j; j=$(echo "$out" | sed -n 's/^BENCHJSON //p')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); us=lambda t: round((int(t) / int(sys.argv[4])) * 1e6 / d["requests"], 1); print(d["rps"], d["p99_ms"], sys.argv[2], us(sys.argv[3]), us(sys.argv[5]))' \
    "$j" "${non2xx:-0}" "$((t1 - t0))" "$(getconf CLK_TCK)" "$((r1 - r0))"
}
names=("none" "policy/local" "key/local" "policy/redis" "key/redis")
stores=(local local local redis redis)
hdrs=("$free" "$policy" "$limited" "$policy" "$limited")
for i in "${!names[@]}"; do DURATION=2 run "${stores[$i]}" "${hdrs[$i]}" >/dev/null; done
echo "round | $(printf '%s req/s (p99 ms, gateway CPU µs/req, Redis CPU µs/req) | ' "${names[@]}")"
declare -A rps p99 cpu rcpu
for r in $(seq 1 "$ROUNDS"); do
  line="$r |"
  for i in "${!names[@]}"; do
    read -r a ap ae ac rc < <(run "${stores[$i]}" "${hdrs[$i]}")
    [[ "$ae" == 0 ]] || echo "non-2xx answers in ${names[$i]}: $ae"
    rps[$i]+="$a "; p99[$i]+="$ap "; cpu[$i]+="$ac "; rcpu[$i]+="$rc "
    line+=" $a ($ap, $ac, $rc) |"
  done
  echo "$line"
done
med() { printf '%s\n' $@ | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
base=$(med ${rps[0]})
for i in "${!names[@]}"; do
  m=$(med ${rps[$i]})
  echo "median ${names[$i]}: $m req/s, p99 $(med ${p99[$i]}) ms, $(med ${cpu[$i]}) µs gateway CPU/req, $(med ${rcpu[$i]}) µs Redis CPU/req; vs none = $(awk -v a="$base" -v b="$m" 'BEGIN{printf "%.2f", b / a}')"
done
