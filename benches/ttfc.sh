#!/usr/bin/env bash
# Added time to first chunk of the unified API vs plain passthrough, on the shared mock provider
# (OpenAI and Anthropic SSE). All traffic is on 127.0.0.1; every process started here is stopped
# on exit, and the client stops after a fixed number of requests.
#
#   cargo build --release --examples && bash benches/ttfc.sh
# Knobs: N=300 requests per variant per round, ROUNDS=5, MOCK_PORT=18080, GW_PORT=18093
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-300}" ROUNDS="${ROUNDS:-5}" MOCK_PORT="${MOCK_PORT:-18080}" GW_PORT="${GW_PORT:-18093}"
CLIENT="$PWD/target/release/examples/ttfc"
WORK="$(mktemp -d /tmp/switchyard-ttfc.XXXXXX)"
source benches/lib.sh
[[ -x "$BIN" && -x "$CLIENT" ]] || { echo "build first: cargo build --release --examples"; exit 1; }
# 20 chunks, no delay between them: the first chunk is what is timed
start_mock "$MOCK_PORT" --chunks 20 --chunk-delay-ms 0
cat >"$WORK/switchyard.yaml" <<YAML
server: {threads: 1, grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 5, pid_file: $WORK/pid, upgrade_sock: $WORK/upgrade.sock}
listeners: [{address: '127.0.0.1:$GW_PORT'}]
origins: [{url: 'http://127.0.0.1:$MOCK_PORT', approved: true, allow_private: true}]
providers:
  openai: {base_url: 'http://127.0.0.1:$MOCK_PORT/v1'}
  anthropic: {base_url: 'http://127.0.0.1:$MOCK_PORT/v1'}
state_dir: $WORK/state
export: {jsonl: {dir: $WORK/logs}}
YAML
# only the two mock providers have keys: no other key from this shell may route traffic elsewhere
UNSET=()
for v in $(compgen -e); do [[ "$v" == *_API_KEY ]] && UNSET+=(-u "$v"); done
env "${UNSET[@]}" OPENAI_API_KEY=sk-bench ANTHROPIC_API_KEY=sk-bench \
  RUST_LOG=warn "$BIN" -c "$WORK/switchyard.yaml" >"$WORK/gw.log" 2>&1 &
PIDS+=($!)
wait_ready "$GW_PORT" "$MOCK_PORT"
timeout 600 "$CLIENT" "http://127.0.0.1:$GW_PORT" "http://127.0.0.1:$MOCK_PORT" "$N" "$ROUNDS"
