#!/usr/bin/env bash
# CPU per request of two gateway binaries, measured in one run, for three variants:
#   passthrough  1 KB chat POST, not streamed, via `Helicone-Target-Url` to the shared mock
#   gpt          unified API, `gpt-4o-mini` -> the openai provider (the mock), streamed
#   claude       unified API, `claude-sonnet-4` -> the anthropic provider (the mock), streamed,
#                translated from Anthropic Messages SSE to OpenAI chunks by the gateway
# Every request sends the same ~1 KB body as ../shared/bench/wrk/post_chat.lua (model and
# "stream" set per variant); the mock streams CHUNKS content chunks with no delay.
#
# Two measures:
#  1. Instructions per request (callgrind). For each binary and variant, a fresh gateway runs
#     under `valgrind --tool=callgrind`; a sequential client sends N requests on one keep-alive
#     connection, the gateway is stopped (SIGTERM) and callgrind's total Ir is read. The same
#     again with 2N requests. (Ir(2N) - Ir(N)) / N is the cost of one request without the
#     start-up, the first connection and the shutdown. All threads of the process are counted
#     (the log exporter too); the kernel is not.
#  2. CPU time per request. Both binaries run natively side by side; wrk -t1 -cCONNS loads one of
#     them for DURATION s at a time (variants and binaries interleaved, ROUNDS rounds); the
#     gateway's utime+stime from /proc/<pid>/stat over the run, divided by the requests wrk
#     counted. Medians over the rounds. wrk, the mock and the gateway share the machine's cores.
#
# Gateway config (both measures): server.threads 1, no gateway keys (open, loopback only), the
# mock approved as an origin, providers openai and anthropic pointed at the mock with
# OPENAI_API_KEY/ANTHROPIC_API_KEY=sk-bench (every other *_API_KEY is unset, so no other provider
# can be routed to), request logging to JSONL (SINK=jsonl, the default, as the earlier benches)
# or no sink (SINK=none).
#
#   cargo build --release            # in each tree, each with its own CARGO_TARGET_DIR
#   bash benches/cpu_per_request.sh /path/to/before/switchyard /path/to/after/switchyard
#
# Knobs: N=200 (callgrind: N and 2N requests), REPS=1 (callgrind pairs per binary and variant;
#        the median is reported), ROUNDS=3 DURATION=5 CONNS=64 (wrk), WARMUP=2 (s of wrk per
#        gateway and variant before the rounds), CHUNKS=20, SINK=jsonl|none,
#        VARIANTS="passthrough gpt claude", SKIP_CALLGRIND=1, SKIP_CPU=1,
#        MOCK_PORT=18080, GW_PORT=18095 (and GW_PORT+1), OUT=<file> (a copy of the report),
#        IDLE_LOAD=1.0 IDLE_WAIT_MAX=300 (before the wrk part, wait at most that many seconds for
#        the 1-minute load average to fall below IDLE_LOAD; the report records it),
#        KEEP=1 (keep the work folder: the callgrind.out files of every run, the configs, logs).
# Needs valgrind, wrk (apt-get install valgrind wrk), python3, ss, curl; the shared mock
# (../shared/bench/mock-upstream) is built on first use into BENCH_TARGET_DIR (/tmp/bench-target).
# Everything listens on 127.0.0.1; every client run is bounded (timeout) and every process
# started here is stopped on exit.
#
# The criterion benches of the same paths (unified request build, stream translation), per tree:
#   CARGO_TARGET_DIR=... cargo bench --bench hot_paths -- "unified request|anthropic stream|openai stream"
# (one tree at a time: besides the release build, it compiles the dev-dependencies optimised,
# about 15 min on 2 busy cores).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 2 ]] || { echo "usage: $0 BIN_BEFORE BIN_AFTER" >&2; exit 2; }
declare -A BINS=([before]="$(realpath "$1")" [after]="$(realpath "$2")")
for b in before after; do
  [[ -x "${BINS[$b]}" ]] || { echo "not an executable: ${BINS[$b]}" >&2; exit 2; }
done
N="${N:-200}" REPS="${REPS:-1}" ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" CONNS="${CONNS:-64}"
WARMUP="${WARMUP:-2}" CHUNKS="${CHUNKS:-20}" SINK="${SINK:-jsonl}" MOCK_PORT="${MOCK_PORT:-18080}"
GW_PORT="${GW_PORT:-18095}" VARIANTS="${VARIANTS:-passthrough gpt claude}"
IDLE_LOAD="${IDLE_LOAD:-1.0}" IDLE_WAIT_MAX="${IDLE_WAIT_MAX:-300}"
case "$SINK" in jsonl|none) ;; *) echo "SINK must be jsonl or none" >&2; exit 2;; esac
WORK="$(mktemp -d /tmp/switchyard-cpureq.XXXXXX)"
source benches/lib.sh
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
[[ -n "${SKIP_CALLGRIND:-}" ]] || command -v valgrind >/dev/null \
  || { echo "valgrind is needed (apt-get install valgrind), or SKIP_CALLGRIND=1" >&2; exit 1; }
[[ -n "${SKIP_CPU:-}" ]] || command -v wrk >/dev/null \
  || { echo "wrk is needed (apt-get install wrk), or SKIP_CPU=1" >&2; exit 1; }
REPORT="$WORK/report.md"
say() { echo "$*" | tee -a "$REPORT"; }
note() { echo "[$(date +%T)] $*" >&2; }

# variant -> model, stream (0/1), passthrough (0/1), the mock's counter it must raise, label
declare -A MODEL=([passthrough]=gpt-4o-mini [gpt]=gpt-4o-mini [claude]=claude-sonnet-4)
declare -A STREAM=([passthrough]=0 [gpt]=1 [claude]=1)
declare -A PASS=([passthrough]=1 [gpt]=0 [claude]=0)
declare -A COUNTER=([passthrough]=chat [gpt]=chat_stream [claude]=messages_stream)
declare -A LABEL=(
  [passthrough]="passthrough chat, 1 KB, not streamed"
  [gpt]="unified \`gpt-4o-mini\` -> openai, streamed"
  [claude]="unified \`claude-sonnet-4\` -> anthropic (translated), streamed"
)
for v in $VARIANTS; do [[ -n "${MODEL[$v]:-}" ]] || { echo "unknown variant $v" >&2; exit 2; }; done

# ------------------------------------------------------------------ the client (python3)
# client.py PORT N VARIANT-MODEL STREAM TARGET|- MOCK_PORT COUNTER: N sequential requests on one
# keep-alive connection; every answer must be a 200 with a complete body, and the mock must have
# seen exactly N requests of the expected kind. Prints one JSON line.
cat >"$WORK/client.py" <<'PY'
import http.client, json, sys, time
port, n, model, stream, target, mock_port, counter = sys.argv[1:8]
n, stream = int(n), stream == "1"

def body():  # the same body as ../shared/bench/wrk/post_chat.lua (BENCH_BODY_BYTES=1024)
    system = ("You are a helpful assistant that answers questions about distributed systems "
              "concisely and accurately. Always mention the main trade-offs.")
    question = ("We run an LLM API gateway in front of several providers. Explain how to keep "
                "p99 latency low while adding authentication, retries with backoff, rate limiting "
                "and streaming passthrough. Give concrete numbers where possible. Context: ")
    tail = ',"stream":true' if stream else ""
    render = lambda pad: ('{"model":"' + model + '","messages":[{"role":"system","content":"' + system
                          + '"},{"role":"user","content":"' + question + pad + '"}],'
                          + '"temperature":0.2,"max_tokens":256,"user":"bench-user-42"' + tail + '}')
    need = 1024 - len(render(""))
    filler = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    pad = (filler * (need // len(filler) + 1))[:need] if need > 0 else ""
    return render(pad).encode()

def stats():
    c = http.client.HTTPConnection("127.0.0.1", int(mock_port), timeout=10)
    c.request("GET", "/stats")
    return json.loads(c.getresponse().read())

b = body()
headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0123456789abcdef"}
if target != "-":
    headers["Helicone-Target-Url"] = target
before = stats()
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
reconnects, nbytes, t0 = 0, 0, time.time()
for i in range(n):
    conn.request("POST", "/v1/chat/completions", b, headers)
    r = conn.getresponse()
    data = r.read()
    nbytes += len(data)
    if r.status != 200:
        sys.exit(f"request {i}: status {r.status}: {data[:300]!r}")
    if stream:
        if b"data: [DONE]" not in data or data.count(b"data: ") < 3:
            sys.exit(f"request {i}: incomplete stream: {data[-300:]!r}")
    elif not json.loads(data).get("choices"):
        sys.exit(f"request {i}: no choices: {data[:300]!r}")
    if r.will_close:
        reconnects += 1
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
conn.close()
after = stats()
seen = after[counter] - before[counter]
if seen != n:
    sys.exit(f"the mock saw {seen} '{counter}' requests, expected {n}")
print(json.dumps({"requests": n, "seconds": round(time.time() - t0, 2), "reconnects": reconnects,
                  "body_bytes": len(b), "answer_bytes_per_request": nbytes // n}))
PY

# ------------------------------------------------------------------ gateway config and start
# only the two mock providers have keys: no other key from this shell may route traffic elsewhere
UNSET=()
for v in $(compgen -e); do [[ "$v" == *_API_KEY ]] && UNSET+=(-u "$v"); done

# write_conf DIR PORT: a config for one gateway in DIR, listening on 127.0.0.1:PORT
write_conf() {
  local dir=$1 port=$2 export
  mkdir -p "$dir"
  if [[ "$SINK" == jsonl ]]; then export="{jsonl: {dir: $dir/logs}}"; else export="{jsonl: null}"; fi
  cat >"$dir/switchyard.yaml" <<YAML
server: {threads: 1, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1, pid_file: $dir/pid, upgrade_sock: $dir/upgrade.sock}
listeners: [{address: '127.0.0.1:$port'}]
origins: [{url: 'http://127.0.0.1:$MOCK_PORT', approved: true, allow_private: true}]
providers:
  openai: {base_url: 'http://127.0.0.1:$MOCK_PORT/v1'}
  anthropic: {base_url: 'http://127.0.0.1:$MOCK_PORT/v1'}
state_dir: $dir/state
export: $export
YAML
}

# start_gw DIR PORT CMD...: the gateway (maybe under valgrind) in the background; its pid in DIR/gwpid
start_gw() {
  local dir=$1 port=$2
  shift 2
  env "${UNSET[@]}" OPENAI_API_KEY=sk-bench ANTHROPIC_API_KEY=sk-bench RUST_LOG=warn \
    "$@" -c "$dir/switchyard.yaml" >"$dir/gw.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$dir/gwpid"
}

# listening PORT: whether something listens on 127.0.0.1:PORT (asked of the kernel: no connection
# is made, so the gateway counts no extra request)
listening() { [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

# wait_listening PORT SECONDS PID
wait_listening() {
  local port=$1 secs=$2 pid=$3
  for _ in $(seq 1 $((secs * 10))); do
    listening "$port" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# stop_gw PID SECONDS: SIGTERM, then wait for the exit (SIGKILL and failure past SECONDS)
stop_gw() {
  local pid=$1 secs=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}

target_of() { if [[ "${PASS[$1]}" == 1 ]]; then echo "http://127.0.0.1:$MOCK_PORT"; else echo -; fi; }

for port in "$MOCK_PORT" "$GW_PORT" "$((GW_PORT + 1))"; do
  listening "$port" && { echo "127.0.0.1:$port is taken (MOCK_PORT / GW_PORT)" >&2; exit 1; }
done
start_mock "$MOCK_PORT" --chunks "$CHUNKS" --chunk-delay-ms 0
wait_ready "$MOCK_PORT"
listening "$MOCK_PORT" || { echo "the mock did not start (see $WORK/mock.log)" >&2; exit 1; }

say "# CPU per request, before vs after ($(date -u +%Y-%m-%dT%H:%MZ))"
say ""
say "- before: \`${BINS[before]}\` (sha256 $(sha256sum "${BINS[before]}" | cut -c1-12))"
say "- after: \`${BINS[after]}\` (sha256 $(sha256sum "${BINS[after]}" | cut -c1-12))"
say "- $(nproc) cores, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo); loadavg at start $(cut -d' ' -f1-3 /proc/loadavg)"
say "- gateway: server.threads 1, logging: $([[ $SINK == jsonl ]] && echo 'JSONL sink (every request written)' || echo 'no sink'); mock: shared mock-upstream, 1 thread, $CHUNKS chunks per stream, no delay"
say ""

# ------------------------------------------------------------------ 1. callgrind
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
fmt() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; } # 1234567 -> 1,234,567
if [[ -z "${SKIP_CALLGRIND:-}" ]]; then
  # cg_run BIN VARIANT REQUESTS TAG: sets CG_IR (callgrind's total Ir) and CG_SECS (client time)
  cg_run() {
    local bin=$1 v=$2 n=$3 tag=$4 dir="$WORK/cg-$4" pid out res
    write_conf "$dir" "$GW_PORT"
    out="$dir/callgrind.out"
    start_gw "$dir" "$GW_PORT" valgrind --tool=callgrind --callgrind-out-file="$out" "$bin"
    pid=$(cat "$dir/gwpid")
    wait_listening "$GW_PORT" 120 "$pid" || { echo "$tag: the gateway did not start: $(tail -5 "$dir/gw.log")" >&2; exit 1; }
    res=$(timeout 600 python3 "$WORK/client.py" "$GW_PORT" "$n" "${MODEL[$v]}" "${STREAM[$v]}" \
          "$(target_of "$v")" "$MOCK_PORT" "${COUNTER[$v]}") \
      || { echo "$tag: client failed; gateway log: $(tail -5 "$dir/gw.log")" >&2; exit 1; }
    stop_gw "$pid" 120 || { echo "$tag: the gateway did not stop within 120 s" >&2; exit 1; }
    CG_IR=$(awk '/^(summary|totals):/{v=$2} END{print v}' "$out")
    [[ -n "$CG_IR" ]] || { echo "$tag: no total in $out" >&2; exit 1; }
    CG_SECS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["seconds"])' "$res")
    note "callgrind $tag: $CG_IR Ir; client: $res"
  }
  declare -A CG
  RAW=()
  for v in $VARIANTS; do
    for b in before after; do
      per=()
      for r in $(seq 1 "$REPS"); do
        cg_run "${BINS[$b]}" "$v" "$N" "$v-$b-$r-n"
        i1=$CG_IR s1=$CG_SECS
        cg_run "${BINS[$b]}" "$v" $((2 * N)) "$v-$b-$r-2n"
        i2=$CG_IR s2=$CG_SECS
        per+=("$(( (i2 - i1) / N ))")
        RAW+=("| $v | $b | $r | $(fmt "$i1") | $(fmt "$i2") | $s1 / $s2 | $(fmt $(( (i2 - i1) / N ))) |")
      done
      CG[$v,$b]=$(med "${per[@]}")
    done
  done
  say "## Instructions per request (callgrind Ir, (Ir(2N) - Ir(N)) / N, N = $N, median of $REPS pair(s) per binary and variant)"
  say ""
  say "| variant | before instr/req | after instr/req | ratio |"
  say "|---|---:|---:|---:|"
  for v in $VARIANTS; do
    say "| ${LABEL[$v]} | $(fmt "${CG[$v,before]}") | $(fmt "${CG[$v,after]}") | $(awk -v a="${CG[$v,after]}" -v b="${CG[$v,before]}" 'BEGIN{printf "%.3f", a / b}') |"
  done
  say ""
  say "<details><summary>raw callgrind totals</summary>"
  say ""
  say "| variant | binary | pair | Ir, N requests | Ir, 2N requests | client s (N / 2N, under valgrind) | per request |"
  say "|---|---|---:|---:|---:|---:|---:|"
  for line in "${RAW[@]}"; do say "$line"; done
  say ""
  say "</details>"
  say ""
fi

# ------------------------------------------------------------------ 2. CPU time under load
if [[ -z "${SKIP_CPU:-}" ]]; then
  # other jobs on the box skew CPU time (not instruction counts): wait, bounded, for a quieter one
  deadline=$((SECONDS + IDLE_WAIT_MAX))
  until awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v t="$IDLE_LOAD" 'BEGIN{exit !(l < t)}'; do
    if ((SECONDS >= deadline)); then note "loadavg still $(cut -d' ' -f1 /proc/loadavg) after ${IDLE_WAIT_MAX} s: measuring anyway"; break; fi
    note "waiting for loadavg1 < $IDLE_LOAD (now $(cut -d' ' -f1 /proc/loadavg))"
    sleep 15
  done
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  declare -A PORT=([before]="$GW_PORT" [after]="$((GW_PORT + 1))")
  for b in before after; do
    write_conf "$WORK/cpu-$b" "${PORT[$b]}"
    start_gw "$WORK/cpu-$b" "${PORT[$b]}" "${BINS[$b]}"
    wait_listening "${PORT[$b]}" 30 "$(cat "$WORK/cpu-$b/gwpid")" \
      || { echo "$b: the gateway did not start: $(tail -5 "$WORK/cpu-$b/gw.log")" >&2; exit 1; }
  done
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  HZ=$(getconf CLK_TCK)
  # load BINARY VARIANT SECONDS: sets L_CPU (gateway CPU µs per request), L_RPS, L_REQS
  load() {
    local b=$1 v=$2 secs=$3 pid t0 t1 out reqs rps bad headers=""
    pid=$(cat "$WORK/cpu-$b/gwpid")
    [[ "${PASS[$v]}" == 1 ]] && headers="Helicone-Target-Url: http://127.0.0.1:$MOCK_PORT"
    local lua=post_chat.lua
    [[ "${STREAM[$v]}" == 1 ]] && lua=post_chat_stream.lua
    t0=$(cpu_ticks "$pid")
    out=$(BENCH_MODEL="${MODEL[$v]}" BENCH_HEADERS="$headers" timeout $((secs + 15)) \
          wrk -t1 -c"$CONNS" -d"${secs}s" -s "$BENCH/wrk/$lua" "http://127.0.0.1:${PORT[$b]}/v1/chat/completions" 2>&1) \
      || { echo "wrk failed: $out" >&2; exit 1; }
    sleep 0.5 # the exporter's last batch of this run
    t1=$(cpu_ticks "$pid")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    bad=$(echo "$out" | awk '/Non-2xx|Socket errors/{print}')
    [[ -z "$bad" && "${reqs:-0}" -gt 0 ]] || { echo "$b $v: errors in the wrk run: $bad" >&2; exit 1; }
    # keep the JSONL files from growing over the run (the sink appends: truncation is safe)
    if [[ "$SINK" == jsonl ]]; then find "$WORK/cpu-$b/logs" -name '*.jsonl' -exec truncate -s 0 {} + 2>/dev/null || true; fi
    L_CPU=$(awk -v t=$((t1 - t0)) -v r="$reqs" -v hz="$HZ" 'BEGIN{printf "%.1f", t / hz * 1e6 / r}')
    L_RPS=$rps L_REQS=$reqs
  }
  for v in $VARIANTS; do for b in before after; do load "$b" "$v" "$WARMUP"; done; done
  declare -A CPU RPS
  CPU_RAW=()
  for r in $(seq 1 "$ROUNDS"); do
    for v in $VARIANTS; do
      for b in before after; do
        load "$b" "$v" "$DURATION"
        c=$L_CPU q=$L_RPS n=$L_REQS
        CPU[$v,$b]="${CPU[$v,$b]:-} $c"; RPS[$v,$b]="${RPS[$v,$b]:-} $q"
        CPU_RAW+=("| $r | $v | $b | $c | $q | $n |")
        note "cpu round $r $v $b: $c µs/req, $q req/s, $n requests"
      done
    done
  done
  say "## Gateway CPU time per request (user+sys, wrk -t1 -c$CONNS, ${DURATION} s per run, medians of $ROUNDS interleaved rounds)"
  say ""
  say "| variant | before µs/req | after µs/req | ratio | before req/s | after req/s |"
  say "|---|---:|---:|---:|---:|---:|"
  for v in $VARIANTS; do
    # shellcheck disable=SC2086
    cb=$(med ${CPU[$v,before]}); ca=$(med ${CPU[$v,after]}); rb=$(med ${RPS[$v,before]}); ra=$(med ${RPS[$v,after]})
    say "| ${LABEL[$v]} | $cb | $ca | $(awk -v a="$ca" -v b="$cb" 'BEGIN{printf "%.3f", a / b}') | $rb | $ra |"
  done
  say ""
  say "<details><summary>every run</summary>"
  say ""
  say "| round | variant | binary | µs/req | req/s | requests |"
  say "|---:|---|---|---:|---:|---:|"
  for line in "${CPU_RAW[@]}"; do say "$line"; done
  say ""
  say "</details>"
  say ""
  say "loadavg at the start of this part: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg). wrk, the mock and the gateways share the cores: compare the ratios; the callgrind counts do not depend on machine noise."
fi
[[ -n "${OUT:-}" ]] && cp "$REPORT" "$OUT"
if [[ -n "${KEEP:-}" ]]; then note "kept $WORK (cg-*/callgrind.out: callgrind_annotate --inclusive=yes FILE)"; else rm -rf "$WORK"; fi
