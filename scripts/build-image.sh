#!/usr/bin/env bash
# Builds liteship's container image with whatever engine is installed (docker, else podman;
# ENGINE=... to choose), tags it, and pushes it to the registry you name.
#   scripts/build-image.sh REGISTRY/NAME:TAG [--no-push]
# e.g. scripts/build-image.sh registry.example.com:5000/liteship:0.1.0
# Log in first (docker login / podman login REGISTRY) when the registry needs it.
# Then deploy with: nomad job run -var liteship_image=REGISTRY/NAME:TAG nomad/overseerr.nomad.hcl
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/build-image.sh REGISTRY/NAME:TAG [--no-push]"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then echo "$usage" >&2; exit 2; fi
ref=$1
push=1
case "${2:-}" in
  "") ;;
  --no-push) push=0 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
case "$ref" in
  *:*) ;;
  *) echo "error: image reference '$ref' has no tag; name one, e.g. $ref:0.1.0" >&2; exit 2 ;;
esac
engine=${ENGINE:-}
if [ -z "$engine" ]; then
  for e in docker podman; do
    if command -v "$e" >/dev/null 2>&1; then engine=$e; break; fi
  done
fi
if [ -z "$engine" ]; then
  echo "error: neither docker nor podman is installed; install one, or use the exec-driver job (nomad/overseerr-exec.nomad.hcl with scripts/package-binary.sh)" >&2
  exit 1
fi
echo "==> $engine build -t $ref ."
"$engine" build -t "$ref" .
if [ "$push" = 1 ]; then
  echo "==> $engine push $ref"
  "$engine" push "$ref"
fi
echo "==> done: nomad job run -var liteship_image=$ref nomad/overseerr.nomad.hcl"
