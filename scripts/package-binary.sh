#!/usr/bin/env bash
# Builds the release binary and packs it for the exec-driver job (nomad/overseerr-exec.nomad.hcl):
# target/package/liteship-VERSION-ARCH-linux.tar.gz and its SHA-256 (the job's checksum).
#   scripts/package-binary.sh [--upload MC_TARGET]
# With --upload, copies the tarball with the MinIO client, e.g. --upload minio/releases
# (make that bucket readable by the Nomad clients: `mc anonymous set download minio/releases`;
# the binary is not secret and the checksum guards its integrity).
# The binary links glibc dynamically: build on a machine whose glibc is not newer than the
# Nomad clients' (the exec driver runs it with the client's libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
upload=
case "${1:-}" in
  "") ;;
  --upload) upload=${2:?usage: scripts/package-binary.sh [--upload MC_TARGET]} ;;
  *) echo "usage: scripts/package-binary.sh [--upload MC_TARGET]" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(uname -m)
cargo build --release --locked --bin liteship
mkdir -p target/package
name="liteship-$version-$arch-linux.tar.gz"
tar -C target/release -czf "target/package/$name" liteship
sum=$(sha256sum "target/package/$name" | cut -d' ' -f1)
echo "target/package/$name"
echo "checksum: sha256:$sum"
if [ -n "$upload" ]; then
  mc cp "target/package/$name" "$upload/$name"
  echo "artifact: http://<minio-host>:9000/${upload#*/}/$name"
fi
