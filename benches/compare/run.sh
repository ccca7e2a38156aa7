#!/usr/bin/env bash
# The head-to-head comparison of liteship and Litestream 0.5.17 on this machine, in one
# command. It installs what it needs (Garage 2.5.0 and the Litestream binaries, as the test
# suite does) and prints the tables recorded in BENCHMARKS.md:
#   1. replication: 100 and 1000 commits/s on one database over S3 (CPU, peak RSS,
#      requests, bytes up/down by level, lag p50/p99) and 100 databases in one process;
#   2. idle: requests per minute over BENCH_IDLE_SECS (default 300) after writes;
#   3. restore of a ~1 GiB replica and of young replicas of 50, 500 and 5000 level-0 files,
#      with the machine's own limit (plain GETs of the same objects);
#   4. with SCALE=1, the scale run (8 GiB by default; not in CI, needs ~40 GB of disk).
# Each part alternates the order of the tools between rounds and prints medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/test.sh --install-only

echo "## replication"
cargo bench --locked --bench replicate_compare

echo "## idle"
BENCH_RATES=100 BENCH_SECS=10 BENCH_ROUNDS=1 BENCH_MANY=0 \
  BENCH_IDLE_SECS="${BENCH_IDLE_SECS:-300}" cargo bench --locked --bench replicate_compare

echo "## restore, ~1 GiB"
cargo bench --locked --bench restore_compare
for n in 50 500 5000; do
  echo "## restore, young replica of $n level-0 files"
  BENCH_L0_FILES=$n cargo bench --locked --bench restore_compare
done

if [ "${SCALE:-0}" = 1 ]; then
  echo "## scale"
  cargo bench --locked --bench scale_compare
fi
