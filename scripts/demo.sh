#!/usr/bin/env bash
# The main job on an embedded default, no server needed: replicate a demo database to a
# file:// replica while a load generator (run with -exec, as an application would be)
# writes to it for 10 seconds, then restore the replica and compare with the source.
# Usage: scripts/demo.sh [DIR]   (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
bin=target/release
dir="${1:-$(mktemp -d -t liteship-demo.XXXXXX)}"
mkdir -p "$dir"
db="$dir/app.db"
replica="file://$dir/replica"

echo "==> replicating $db to $replica (10 s of writes)"
"$bin/liteship" replicate \
  -exec "$bin/liteship-load $db --rate 200 --duration 10" \
  "$db" "$replica" >/dev/null
echo "==> restoring $replica to $dir/restored.db"
"$bin/liteship" restore -o "$dir/restored.db" "$replica"
rows() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*), max(seq) from load').fetchone())" "$1"; }
echo "source:   $(rows "$db")"
echo "restored: $(rows "$dir/restored.db")"
echo "replica files:"; find "$dir/replica" -type f | sort | sed 's/^/  /'
