#!/usr/bin/env bash
# Runs one soak scenario (tests/soak/main.rs) in release mode and prints its figures:
#   scripts/soak.sh kill_cycles | writer_kills | outage | mixed_faults | disk_full | all
# Sizes come from SOAK_CYCLES and SOAK_MINUTES (see tests/soak/main.rs for the defaults).
# Needs what scripts/test.sh installs (Garage, the Litestream oracles); runs as root for
# the tmpfs of disk_full. Results are recorded in docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?usage: scripts/soak.sh SCENARIO|all}
if [ "$scenario" = all ]; then
  # Every scenario runs even when one fails; the exit status says whether any did.
  failed=()
  for s in kill_cycles writer_kills outage mixed_faults disk_full; do
    "$0" "$s" || failed+=("$s")
  done
  if [ ${#failed[@]} -gt 0 ]; then echo "==> failed: ${failed[*]}"; exit 1; fi
  exit 0
fi
echo "==> soak $scenario ($(date -u +%FT%TZ), $(nproc) cores)"
mkdir -p target/soak
log=target/soak/$scenario.log
status=0
cargo test --release --test soak -- --exact "$scenario" --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
grep -E '^SOAK|panicked|test result|FAILED' "$log" || tail -30 "$log"
exit "$status"
