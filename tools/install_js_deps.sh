#!/usr/bin/env bash
# Installs the npm packages the tests drive (tests/js/package-lock.json) with the machine's Node.js.
# Idempotent: does nothing when node_modules already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/../tests/js"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  echo "install_js_deps: installing nodejs and npm"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nodejs npm
fi

stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && cmp -s package-lock.json .installed-lock 2>/dev/null; then
  exit 0
fi
echo "install_js_deps: npm ci in tests/js"
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json .installed-lock
