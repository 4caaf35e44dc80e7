#!/usr/bin/env bash
# Installs the Debian packages Switchyard builds and tests with. Idempotent: installs only what is
# missing, runs apt-get update only when something is, and uses sudo only when not root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libdnnl-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev libzip-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  prometheus-cpp-dev libboost-dev libssl-dev openssl curl
  prometheus docker-compose yamllint
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy python3-jinja2
)

# `install_deps.sh --fuzz` adds what the libFuzzer build needs.
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-14-dev libomp-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
