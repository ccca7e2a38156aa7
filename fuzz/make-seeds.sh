#!/usr/bin/env bash
# Builds the seed corpora in fuzz/seeds/ from real files: LTX files written by Litestream
# 0.5.17 (block-framed pages), 0.5.15 (legacy LZ4-frame pages) and liteship, a WAL written
# by SQLite, replica key names and URLs, and litestream.yml files. Needs the release build
# (target/release/liteship) and the oracles in .tools/ (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seeds=$root/fuzz/seeds
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$seeds"/{ltx_decode,wal_reader,wal_frames,key_names,config_parse}

mkdb() { # small pages keep the seeds small
  python3 - "$1" "$2" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA page_size=512"); c.execute("PRAGMA journal_mode=wal")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(int(sys.argv[2])):
    c.execute("INSERT INTO t(v) VALUES (?)", ("x" * (i % 50),)); c.commit()
PY
}

for tool in litestream-0.5.17 litestream-0.5.15 liteship; do
  d=$work/$tool; mkdir -p "$d"
  mkdb "$d/app.db" 3
  if [ "$tool" = liteship ]; then
    "$root/target/release/liteship" replicate "$d/app.db" "file://$d/replica" >/dev/null 2>&1 &
  else
    printf 'dbs:\n  - path: %s\n    monitor-interval: 200ms\n    replica:\n      type: file\n      path: %s\n      sync-interval: 200ms\nlevels: [{interval: 1s}]\n' \
      "$d/app.db" "$d/replica" > "$d/l.yml"
    "$root/.tools/$tool/bin/litestream" replicate -config "$d/l.yml" >/dev/null 2>&1 &
  fi
  pid=$!
  sleep 2; mkdb "$d/app.db" 4; sleep 2; mkdb "$d/app.db" 2; sleep 3
  kill "$pid"; wait "$pid" 2>/dev/null || true
  i=0
  for f in $(find "$d/replica" -name '*.ltx' | sort | head -6); do
    cp "$f" "$seeds/ltx_decode/$tool-$i.ltx"; i=$((i + 1))
  done
done

python3 - "$seeds/wal_reader/sqlite.wal" <<'PY'
import sqlite3, sys, shutil, tempfile, os
d = tempfile.mkdtemp(); p = os.path.join(d, "w.db")
c = sqlite3.connect(p); c.execute("PRAGMA page_size=512"); c.execute("PRAGMA journal_mode=wal")
c.execute("PRAGMA wal_autocheckpoint=0"); c.execute("CREATE TABLE t(v)")
for i in range(3):
    c.execute("INSERT INTO t VALUES (?)", (i,)); c.commit()
shutil.copy(p + "-wal", sys.argv[1])
PY

# wal_frames: 1 byte of flags, then 4 bytes per frame (pgno, commit?, commit size, fill)
printf '\x00\x01\x01\x05\x41\x02\x00\x00\x42\x03\x01\x07\x43' > "$seeds/wal_frames/commit-then-tail"
printf '\x01\x01\x01\x02\x10\x02\x01\x03\x20\x05\x01\x01\x30' > "$seeds/wal_frames/big-endian-shrink"

printf '0000000000000001-0000000000000001.ltx' > "$seeds/key_names/l0"
printf '0000000000000001-00000000000003e8.ltx' > "$seeds/key_names/snapshot"
printf '00000000.snapshot.lz4' > "$seeds/key_names/v3-snapshot"
printf '00000001_00001000.wal.lz4' > "$seeds/key_names/v3-segment"
printf 's3://bucket/db?endpoint=127.0.0.1:9000&region=us-east-1&forcePathStyle=true' > "$seeds/key_names/s3-url"
printf 'file:///var/lib/replica' > "$seeds/key_names/file-url"

cat > "$seeds/config_parse/full.yml" <<'YML'
addr: ":9090"
dbs:
  - path: /data/db.sqlite3
    monitor-interval: 1s
    checkpoint-interval: 1m
    max-sync-wal-bytes: 64MiB
    replica:
      type: s3
      bucket: b
      path: db
      endpoint: http://minio:9000
      access-key-id: ${KEY}
      secret-access-key: $SECRET
      sync-interval: 1s
levels: [{interval: 30s}, {interval: 5m}]
snapshot: {interval: 24h, retention: 24h}
l0-retention: 5m
lease-ttl: 30s
logging: {level: info, type: json}
YML
printf 'dbs:\n  - path: /d.db\n    replica:\n      url: file:///r\n' > "$seeds/config_parse/url.yml"
ls "$seeds"/*
