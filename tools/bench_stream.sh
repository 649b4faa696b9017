#!/usr/bin/env bash
# Issue 27's measurements, one command after the other on one machine: `pointseg segment` of a
# 5 M-point floor in memory with an older checkout (OLD, e.g. a worktree of c792cf2) and with this
# one, then this one streamed on the 5 M and the 50 M-point floors. Peak resident memory from
# /usr/bin/time -v; every run's JSON summary kept in OUT/NAME/.
#   git worktree add /tmp/old c792cf2
#   bash tools/bench_stream.sh /tmp/old /work/floors /work/floors/results
# Floors: tools/bench_segment.py builds and caches them (--cache FLOORS; 5 M and 50 M points, seed 4242).
set -u
OLD=$1 FLOORS=$2 OUT=$3
NEW=$(cd "$(dirname "$0")/.." && pwd)
PY="$NEW/.venv/bin/python"
F5=$FLOORS/floor_5000000_s4242_d22000_v1.las
F50=$FLOORS/floor_50000000_s4242_d22000_v1.las
PYTHONPATH=$NEW "$PY" -c "
import sys; sys.path.insert(0, '$NEW/tools'); import bench_segment as b; from pathlib import Path
from pointseg.data.floor import S3DIS_DENSITY
for n in (5_000_000, 50_000_000): b.build_floor(Path('$FLOORS'), n, 4242, S3DIS_DENSITY)"
mkdir -p "$OUT"
export MALLOC_MMAP_THRESHOLD_=131072      # freed memory returned at once: the peak is the run's own
run() {  # NAME CHECKOUT SCAN [segment args...]
  local name=$1 co=$2 scan=$3; shift 3
  rm -rf "$OUT/$name" "$OUT/$name.stream-work"
  echo "== $name $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/log.txt"
  ( cd "$co" && PYTHONPATH=$co /usr/bin/time -v "$PY" -m pointseg segment "$scan" --out "$OUT/$name" --quiet \
      --no-render --write labels,json,scan --up +z "$@" ) > "$OUT/$name.stdout" 2> "$OUT/$name.stderr"
  echo "rc $? $(grep -E 'Maximum resident|Elapsed' "$OUT/$name.stderr" | tr '\n' ' ')" | tee -a "$OUT/log.txt"
}
run old_mem_5m "$OLD" "$F5"
run new_mem_5m "$NEW" "$F5"
run new_stream_5m "$NEW" "$F5" --stream
run new_stream_50m "$NEW" "$F50" --stream
