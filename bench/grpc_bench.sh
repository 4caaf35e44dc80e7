#!/usr/bin/env bash
# gRPC serving figures on the demo model: the transport overhead per streamed message (client
# time minus the server's own time for it) at moderate load, and the most concurrent streams held
# without an error. Starts its own server on a free port, runs `switchyard-cli bench`, stops it.
#
#   bench/grpc_bench.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
model=$build/demo/model
adapters=$build/demo/adapters
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

"$build/bin/switchyard-server" --model "$model" --adapter-root "$adapters" \
  --served-model-name switchyard-demo \
  --adapter mixlora --adapter loramoe --adapter mola --adapter mhmoe --adapter lora \
  --grpc-port 0 --http-port -1 --host 127.0.0.1 --ports-file "$work/ports" --log-level warning \
  --max-waiting 100000 --kv-cache-mib 2048 &
server=$!
for _ in $(seq 600); do [ -f "$work/ports" ] && break; sleep 0.1; done
port=$(sed 's/.*"grpc": *\([0-9]*\).*/\1/' "$work/ports")
cli=("$build/bin/switchyard-cli" --target "127.0.0.1:$port")
mix=(--adapters mixlora,loramoe,mola,mhmoe,lora,base --zipf 1.0)

echo "== transport overhead: closed loop, 32 streams, 20 s, prompts 16-64, outputs 32-128 tokens"
"${cli[@]}" bench --mode closed --concurrency 32 --duration_s 20 "${mix[@]}" \
  --prompt_tokens 16:64 --output_tokens 32:128

echo
echo "== open loop: Poisson 20 requests/s, 20 s"
"${cli[@]}" bench --mode poisson --rate 20 --duration_s 20 "${mix[@]}" \
  --prompt_tokens 16:64 --output_tokens 32:128

for n in 1000 2000 4000; do
  echo
  echo "== concurrent streams: $n open at once (closed loop, 10 s, outputs 64-128 tokens)"
  "${cli[@]}" bench --mode closed --concurrency "$n" --duration_s 10 "${mix[@]}" \
    --prompt_tokens 8:16 --output_tokens 64:128 || echo "errors at $n streams"
done
