#!/usr/bin/env bash
# HTTP (OpenAI API) serving figures on the demo model, for comparison with bench/grpc_bench.sh's
# closed loop: the same mix of adapters, 32 streams for 20 s, then many concurrent streams.
# Starts its own server on free ports, runs bench/http_bench.mjs, stops it.
#
#   bench/http_bench.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
here=$(dirname "$0")
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

"$build/bin/switchyard-server" --model "$build/demo/model" --adapter-root "$build/demo/adapters" \
  --served-model-name switchyard-demo \
  --adapter mixlora --adapter loramoe --adapter mola --adapter mhmoe --adapter lora \
  --grpc-port 0 --http-port 0 --host 127.0.0.1 --ports-file "$work/ports" --log-level warning \
  --max-waiting 100000 --kv-cache-mib 2048 &
server=$!
for _ in $(seq 600); do [ -f "$work/ports" ] && break; sleep 0.1; done
port=$(sed 's/.*"http": *\([0-9]*\).*/\1/' "$work/ports")
run=(node "$here/http_bench.mjs" --url "http://127.0.0.1:$port"
     --models mixlora,loramoe,mola,mhmoe,lora,switchyard-demo)

echo "== closed loop: 32 streams, 20 s, prompts 16-64 words, outputs 32-128 tokens"
"${run[@]}" --concurrency 32 --duration 20 --prompt-tokens 16:64 --output-tokens 32:128

for n in 1000 2000; do
  echo
  echo "== concurrent streams: $n open at once (closed loop, 10 s, outputs 64-128 tokens)"
  "${run[@]}" --concurrency "$n" --duration 10 --prompt-tokens 8:16 --output-tokens 64:128 ||
    echo "errors at $n streams"
done
