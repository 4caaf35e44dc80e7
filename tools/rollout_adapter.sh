#!/usr/bin/env bash
# Rolls a new version of an adapter out to a fleet of switchyard-server replicas, one replica at
# a time, with the admin API (LoadAdapter with replace: an atomic swap on each replica; requests
# running there finish on the version they started with, new ones get the new version).
#
#   tools/rollout_adapter.sh NAME PATH HOST:PORT [HOST:PORT ...]
#
# PATH is relative to each replica's --adapter-root (the same shared volume in Kubernetes).
# SWITCHYARD_ADMIN_TOKEN carries the admin token; SWITCHYARD_CLI overrides the client binary.
# Stops at the first replica that refuses, says which replicas have the new version, exits 1:
# rerun it once the cause is fixed (swapping to the same path again is harmless).
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
name=$1 path=$2
shift 2
cli=${SWITCHYARD_CLI:-$(dirname "$0")/../build/bin/switchyard-cli}
done_targets=()
for target in "$@"; do
  if ! out=$("$cli" --target "$target" adapters swap "$name" "$path" 2>&1); then
    echo "rollout of $name to $path failed at $target: $out" >&2
    echo "replicas with the new version: ${done_targets[*]:-none}" >&2
    exit 1
  fi
  echo "$target: $out"
  done_targets+=("$target")
done
echo "rolled $name out to $path on ${#done_targets[@]} replica(s)"
