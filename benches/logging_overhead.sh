#!/usr/bin/env bash
# Proxy throughput with request logging to JSONL on vs off, in one run (interleaved rounds), on
# the shared mock provider. All traffic is on 127.0.0.1, every wrk run is bounded by `timeout`,
# and every process started here is stopped on exit.
#
#   cargo build --release && bash benches/logging_overhead.sh
# Knobs: ROUNDS=3 DURATION=8 CONNS=64 MOCK_PORT=18080 LOG_DIR=<temp dir> (where the JSONL goes:
#        its filesystem matters, since new page-cache pages are most of the cost of writing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-8}" CONNS="${CONNS:-64}" MOCK_PORT="${MOCK_PORT:-18080}"
WORK="$(mktemp -d /tmp/switchyard-logbench.XXXXXX)"
source benches/lib.sh
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
[[ -x "$BIN" ]] || { echo "build first: cargo build --release"; exit 1; }
start_mock "$MOCK_PORT"

# name port export-section
start_gw() {
  local name=$1 port=$2 export=$3
  mkdir -p "$WORK/$name"
  cat >"$WORK/$name/switchyard.yaml" <<YAML
server: {threads: 1, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 5, pid_file: $WORK/$name/pid, upgrade_sock: $WORK/$name/upgrade.sock}
listeners: [{address: '127.0.0.1:$port'}]
origins: [{url: 'http://127.0.0.1:$MOCK_PORT', approved: true, allow_private: true}]
state_dir: $WORK/$name/state
export: $export
YAML
  RUST_LOG=warn "$BIN" -c "$WORK/$name/switchyard.yaml" >"$WORK/$name/log" 2>&1 &
  PIDS+=($!)
  echo $! >"$WORK/$name/gwpid"
}
LOG_DIR="${LOG_DIR:-$WORK/on/logs}"
start_gw on 18091 "{jsonl: {dir: $LOG_DIR}}"
start_gw off 18092 "{jsonl: null}"
wait_ready 18091 18092 "$MOCK_PORT"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name port -> "req/s cpu_us_per_req requests"
  local name=$1 port=$2 pid t0 t1 out reqs
  pid=$(cat "$WORK/$name/gwpid")
  t0=$(cpu_ticks "$pid")
  out=$(BENCH_HEADERS="Helicone-Target-Url: http://127.0.0.1:$MOCK_PORT" timeout $((DURATION + 10)) \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$BENCH/wrk/post_chat.lua" "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
  t1=$(cpu_ticks "$pid")
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  echo "$rps $(awk -v t=$((t1 - t0)) -v r="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz * 1e6 / r}') $reqs ${non2xx:-0}"
}
# warm-up
DURATION=2 run on 18091 >/dev/null; DURATION=2 run off 18092 >/dev/null
echo "round | JSONL on req/s | CPU µs/req | JSONL off req/s | CPU µs/req"
declare -a on_rps off_rps on_cpu off_cpu
total_on=0
for r in $(seq 1 "$ROUNDS"); do
  read -r a ac an ae < <(run on 18091); read -r b bc bn be < <(run off 18092)
  [[ "$ae" == 0 && "$be" == 0 ]] || echo "non-2xx answers: on $ae, off $be"
  on_rps+=("$a"); off_rps+=("$b"); on_cpu+=("$ac"); off_cpu+=("$bc")
  echo "$r | $a | $ac | $b | $bc"
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mo=$(med "${on_rps[@]}"); mf=$(med "${off_rps[@]}"); co=$(med "${on_cpu[@]}"); cf=$(med "${off_cpu[@]}")
echo "median: on $mo req/s, $co µs/req; off $mf req/s, $cf µs/req; throughput on/off = $(awk -v a="$mo" -v b="$mf" 'BEGIN{printf "%.3f", a / b}'), CPU on/off = $(awk -v a="$co" -v b="$cf" 'BEGIN{printf "%.3f", a / b}')"
# the exporter thread's own CPU (user and kernel), per record written
on_pid=$(cat "$WORK/on/gwpid")
exp_ticks=$(for t in /proc/"$on_pid"/task/*; do
  if [[ "$(cat "$t/comm")" == "BG log exporter" ]]; then sed 's/.*) //' "$t/stat" | awk '{print $12, $13}'; fi
done | awk '{u += $1; s += $2} END {print u + 0, s + 0}')
# every request the "on" gateway answered must be in its JSONL files (checked after a clean stop)
kill -TERM "$on_pid"
for _ in $(seq 1 100); do kill -0 "$(cat "$WORK/on/gwpid")" 2>/dev/null || break; sleep 0.1; done
lines=$(cat "$LOG_DIR"/*.jsonl | wc -l)
echo "JSONL lines written by the logging gateway: $lines"
read -r eu es <<< "$exp_ticks"
awk -v u="$eu" -v s="$es" -v n="$lines" -v hz="$(getconf CLK_TCK)" \
  'BEGIN{printf "exporter thread CPU per record: %.1f µs user + %.1f µs kernel\n", u / hz * 1e6 / n, s / hz * 1e6 / n}'
rm -rf "$WORK" "$LOG_DIR"
