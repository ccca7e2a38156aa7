#!/usr/bin/env bash
# Fuzzes one target with AFL++ (cargo-afl, stable Rust) for a number of minutes, starting
# from fuzz/seeds/TARGET, and prints afl-fuzz's summary (executions, coverage, crashes).
#   fuzz/run.sh ltx_decode|wal_reader|wal_frames|key_names|config_parse [MINUTES=10]
# Crashes land in fuzz/out/TARGET/default/crashes/; each becomes a regression test.
# Setup once: cargo install cargo-afl --locked && cargo afl config --build
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [MINUTES]}
minutes=${2:-10}
cargo afl build --release --bin "$target" >/dev/null
mkdir -p "out/$target"
AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  cargo afl fuzz -i "seeds/$target" -o "out/$target" -V $((minutes * 60)) \
  "target/release/$target" > "out/$target.log" 2>&1 || true
stats=out/$target/default/fuzzer_stats
grep -E '^(execs_done|execs_per_sec|corpus_count|bitmap_cvg|saved_crashes|saved_hangs|run_time)' "$stats"
