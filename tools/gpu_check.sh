#!/usr/bin/env bash
# One command for a GPU machine that has CUDA's toolkit and driver but none of our Debian
# libraries and no package registry (docs/cuda.md).
#
#   tools/gpu_check.sh pack [BUILD_DIR] [OUT]  here: build with CUDA, bundle the CUDA tests, the
#                                              server, the benchmarks, the test model and adapters,
#                                              the model generator, and every shared library they
#                                              need that is not the C library or CUDA's own, into
#                                              OUT (default gpu-check.tar.gz, under 64 MiB)
#   tools/gpu_check.sh run [BUNDLE] [WORKDIR]  there: unpack, run every CUDA test, compute-sanitizer
#                                              memcheck and racecheck on the MoE-LoRA op test, a
#                                              server smoke test with adapters, and the GPU
#                                              benchmarks; print one summary (about 6 minutes on
#                                              an H200)
#
# `run` on a machine without a GPU checks the unpacking: the CUDA tests skip and it says so.
set -uo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"

# Libraries the target machine provides itself: the C runtime, and CUDA's (driver and toolkit).
is_system_lib() {
  case "$(basename "$1")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux*.so* | \
      libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnvidia*.so* | \
      linux-vdso.so*) return 0 ;;
  esac
  return 1
}

pack() {
  local build="${1:-$here/build}" out="${2:-$here/gpu-check.tar.gz}"
  if [[ -z "${GPU_CHECK_PREBUILT:-}" ]]; then
    command -v nvcc >/dev/null || { echo "pack: nvcc not found: CUDA cannot be built here" >&2; return 1; }
    cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release | grep -q "CUDA engine ON" ||
      { echo "pack: this build has no CUDA backend" >&2; return 1; }
    ninja -C "$build" switchyard-server cuda_backend_test cuda_engine_test moe_ops_test \
      bench_engine bench_adapters || return 1
    # The fixtures the tests read (made by ctest's fixture steps).
    (cd "$build" && ctest -R "make_test_model|make_test_adapters" >/dev/null) || return 1
  fi

  local stage
  stage="$(mktemp -d)/gpu-check"
  mkdir -p "$stage/bin" "$stage/lib" "$stage/tools"
  local bins=("$build/bin/switchyard-server" "$build/tests/cuda_backend_test"
              "$build/tests/cuda_engine_test" "$build/tests/moe_ops_test"
              "$build/bench/bench_engine" "$build/bench/bench_adapters")
  cp "${bins[@]}" "$stage/bin/"
  strip --strip-debug "$stage"/bin/* 2>/dev/null
  local lib
  for lib in $(ldd "${bins[@]}" | awk '/=> \//{print $3}' | sort -u); do
    is_system_lib "$lib" || cp -L "$lib" "$stage/lib/"
  done
  cp -r "$build/test-models" "$build/test-adapters" "$stage/"
  cp -r "$here/tools/modelgen" "$stage/tools/"
  cp "$here/tools/gpu_check.sh" "$stage/"
  tar -C "$(dirname "$stage")" -czf "$out" gpu-check || return 1
  rm -rf "$(dirname "$stage")"
  local size
  size=$(stat -c %s "$out")
  echo "pack: $out, $((size / 1024 / 1024)) MiB ($(tar -tzf "$out" | grep -c /lib/) libraries)"
  if ((size > 64 * 1024 * 1024)); then
    echo "pack: over the 64 MiB a device call carries" >&2
    return 1
  fi
}

# A step of the summary: NAME, then the command; its output goes to the log.
results=()
step() {
  local name="$1"
  shift
  local t0=$SECONDS
  echo "=== $name: $*" >>"$log"
  if "$@" >>"$log" 2>&1; then
    results+=("PASS  $name ($((SECONDS - t0)) s)")
  else
    results+=("FAIL  $name ($((SECONDS - t0)) s, exit $?)")
  fi
}

smoke_test() {
  local port_file="$work/ports.json" root="$work/adapters"
  mkdir -p "$root"
  cp -r "$dir/test-adapters/mixlora" "$dir/test-adapters/loramoe" "$root/"
  "$dir/bin/switchyard-server" --model "$dir/test-models/tiny" --device "$1" --host 127.0.0.1 \
    --grpc-port 0 --http-port 0 --metrics-port 0 --ports-file "$port_file" \
    --adapter-root "$root" --adapter mixlora=mixlora --adapter loramoe=loramoe \
    --log-level warning &
  local pid=$!
  for _ in $(seq 1 300); do [[ -s "$port_file" ]] && break; sleep 0.1; done
  python3 - "$port_file" <<'EOF'
import json, sys, urllib.request
port = json.load(open(sys.argv[1]))["http"]
def post(body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))
for model in ["tiny", "mixlora", "loramoe"]:
    r = post({"model": model, "prompt": "The quick brown fox", "max_tokens": 16,
              "temperature": 0, "ignore_eos": True})
    n = r["usage"]["completion_tokens"]
    print(f"{model}: {n} tokens: {r['choices'][0]['text']!r}")
    assert n == 16, r
EOF
  local rc=$?
  kill "$pid" 2>/dev/null
  wait "$pid"
  return $rc
}

# Every library a bundled binary loads is found, and each one that is not the C library or CUDA's
# comes from the bundle (so the check means something on a machine that has them all).
libraries_from_bundle() {
  local ok=0 line lib
  while read -r line; do
    [[ "$line" == *"not found"* ]] && { echo "missing: $line"; ok=1; continue; }
    lib=$(awk '/=> \//{print $3}' <<<"$line")
    [[ -z "$lib" ]] && continue
    if ! is_system_lib "$lib" && [[ "$lib" != "$dir/lib/"* ]]; then
      echo "not from the bundle: $lib"
      ok=1
    fi
  done < <(ldd "$dir"/bin/*)
  return $ok
}

run() {
  local bundle="${1:-$here/gpu-check.tar.gz}"
  work="${2:-$(mktemp -d)}"
  log="$work/gpu-check.log"
  mkdir -p "$work"
  tar -C "$work" -xzf "$bundle" || { echo "run: cannot unpack $bundle" >&2; return 1; }
  dir="$work/gpu-check"
  local cuda_libs="/usr/local/cuda/lib64"
  # pip's CUDA wheels (PyTorch's) carry cuBLAS where the toolkit's folder lacks it.
  local wheel
  for wheel in $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null); do
    [[ -d "$wheel" ]] && cuda_libs="$cuda_libs:$wheel"
  done
  export LD_LIBRARY_PATH="$dir/lib:$cuda_libs:${LD_LIBRARY_PATH:-}"
  export SWITCHYARD_TEST_MODEL="$dir/test-models/tiny"
  export SWITCHYARD_TEST_MODEL_F32="$dir/test-models/tiny-f32"
  export SWITCHYARD_TEST_ADAPTERS="$dir/test-adapters"
  : >"$log"
  step "libraries resolve, from the bundle" libraries_from_bundle
  local gpu=0
  nvidia-smi -L >>"$log" 2>&1 && gpu=1
  step "moe_ops_test (CPU reference)" "$dir/bin/moe_ops_test"
  step "cuda_backend_test" "$dir/bin/cuda_backend_test"
  step "cuda_engine_test" "$dir/bin/cuda_engine_test"
  if ((gpu)) && command -v compute-sanitizer >/dev/null; then
    step "memcheck (MoE-LoRA ops)" compute-sanitizer --tool memcheck --error-exitcode 1 \
      "$dir/bin/cuda_backend_test" --gtest_filter='*Moe*'
    step "racecheck (MoE-LoRA ops)" compute-sanitizer --tool racecheck --error-exitcode 1 \
      "$dir/bin/cuda_backend_test" --gtest_filter='*Moe*'
  else
    results+=("SKIP  compute-sanitizer (no GPU or no compute-sanitizer)")
  fi
  if ((gpu)); then
    step "server smoke test with adapters" smoke_test cuda
    local models="$work/models"
    step "make the 0.5B BF16 bench model" python3 "$dir/tools/modelgen/make_model.py" \
      --preset bench-0.5b --dtype bf16 --out "$models/bench-bf16"
    step "make 8 MixLoRA adapters (8 experts, top-2, rank 16)" bash -c "for i in \$(seq 0 7); do
      python3 $dir/tools/modelgen/make_adapter.py --model $models/bench-bf16 \
        --out $models/mixlora-\$i --family mixlora --experts 8 --top-k 2 --r 16 --seed \$i \
        --format safetensors || exit 1; done"
    step "bench_engine (GPU)" "$dir/bin/bench_engine" --device cuda --models "$models/bench-bf16" \
      --batch 64
    # 64 sequences over 64 adapters: the 8 folders loaded 8 times each (64 distinct adapters).
    local adapters
    adapters=$(for r in $(seq 0 7); do for i in $(seq 0 7); do printf '%s,' "$models/mixlora-$i"; done; done)
    step "bench_adapters (GPU, 64 sequences)" "$dir/bin/bench_adapters" --device cuda \
      --model "$models/bench-bf16" --adapters "${adapters%,}" --batch 64 --only abc --rounds 3
  else
    # Without a GPU the smoke test runs on the CPU (selftest), which checks the script itself.
    if [[ -n "${GPU_CHECK_SMOKE_CPU:-}" ]]; then
      step "server smoke test with adapters (CPU)" smoke_test cpu
    fi
    results+=("SKIP  GPU server smoke test and GPU benchmarks (no GPU)")
  fi
  echo
  echo "gpu_check summary ($(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no GPU'))"
  printf '  %s\n' "${results[@]}"
  echo "figures:"
  grep -E "tok/s|ms/step|\(b\)/\(a\)|\(c\)/\(b\)|^\[  (PASSED|FAILED|SKIPPED)  \] [0-9]|tokens:" \
    "$log" | sed 's/^/  /'
  echo "log: $log"
  ! printf '%s\n' "${results[@]}" | grep -q '^FAIL'
}

# For make test: pack from an existing build, unpack, run (no GPU: the GPU steps skip).
selftest() {
  local build="$1" tmp
  tmp=$(mktemp -d)
  GPU_CHECK_PREBUILT=1 pack "$build" "$tmp/bundle.tar.gz" || return 1
  GPU_CHECK_SMOKE_CPU=1 run "$tmp/bundle.tar.gz" "$tmp/work"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  selftest) shift; selftest "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack [BUILD_DIR] [OUT] | run [BUNDLE] [WORKDIR]" >&2; exit 2 ;;
esac
