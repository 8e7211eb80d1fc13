#!/bin/sh
# The overlay benchmark side by side with OpenDHT, same workload, same machine, same run.
#
# For each N and seed, runs the OpenDHT harness (bench/opendht/bench.py) and
# `dots bench overlay` back to back with the same K, C, kill fraction, settle and seed
# (which one goes first alternates with the seed), then prints both summaries
# (bench/opendht/summarize.py) and the side-by-side table (bench/compare.py).
# Each run executes inside its own network namespace whose only interface is lo.
#
# usage: sudo sh bench/overlay.sh [outdir]
#   env: NODES="10 50" SEEDS="1" KEYS=1000 CONC=16 KILL=0.3 SETTLE=10
# Needs root (apt-get, unshare -n), Debian 12 (dhtnode, python3-opendht 2.4.12), cargo.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-$ROOT/target/bench/overlay-$(date +%Y%m%d-%H%M%S)}
NODES=${NODES:-"10 50"}
SEEDS=${SEEDS:-1}
KEYS=${KEYS:-1000}
CONC=${CONC:-16}
KILL=${KILL:-0.3}
SETTLE=${SETTLE:-10}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}   # seconds, per run

if [ "$(id -u)" != 0 ]; then
  echo "overlay.sh: needs root (package install, unshare -n)" >&2
  exit 1
fi
sh "$HERE/install-opendht.sh"
(cd "$ROOT" && cargo build --release -p dots)
DOTS="$ROOT/target/release/dots"
mkdir -p "$OUT"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  free -h
  echo "kernel: $(uname -sr)"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "rustc: $(rustc -V)"
  echo "opendht: $(dpkg-query -W -f='${Version}' python3-opendht)"
  echo "python: $(/usr/bin/python3 -V 2>&1)"
  echo "dots commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || echo ' (crates/ modified)')"
  echo "params: NODES=$NODES SEEDS=$SEEDS KEYS=$KEYS CONC=$CONC KILL=$KILL SETTLE=$SETTLE"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# `timeout` runs each benchmark in its own process group, out of reach of the terminal's
# Ctrl-C: forward INT/TERM to it (it passes them on to the whole group).
CUR=""
trap 'if [ -n "$CUR" ]; then kill -TERM "$CUR" 2>/dev/null; wait "$CUR" 2>/dev/null; fi; exit 130' INT TERM
bounded() {  # log cmd...: run cmd under `timeout`, output appended to log
  log=$1; shift
  timeout "$RUN_TIMEOUT" "$@" >> "$log" 2>&1 &
  CUR=$!
  rc=0; wait "$CUR" || rc=$?
  CUR=""
  [ "$rc" = 0 ] || echo "# exit $rc" >> "$log"
}

run_odht() {  # n seed
  echo "# $(date +%T) OpenDHT n=$1 seed=$2 (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  echo "# loadavg before: $(cat /proc/loadavg)" > "$OUT/odht_n$1_s$2.txt"
  bounded "$OUT/odht_n$1_s$2.txt" /usr/bin/python3 "$HERE/opendht/bench.py" -n "$1" -k "$KEYS" -c "$CONC" \
    --kill-frac "$KILL" --settle "$SETTLE" --seed "$2"
  echo "# loadavg after: $(cat /proc/loadavg)" >> "$OUT/odht_n$1_s$2.txt"
}
run_dots() {  # n seed
  echo "# $(date +%T) DOTS n=$1 seed=$2 (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  echo "# loadavg before: $(cat /proc/loadavg)" > "$OUT/dots_n$1_s$2.txt"
  bounded "$OUT/dots_n$1_s$2.txt" "$DOTS" bench overlay -n "$1" -k "$KEYS" -c "$CONC" \
    --kill-frac "$KILL" --settle "$SETTLE" --seed "$2"
  echo "# loadavg after: $(cat /proc/loadavg)" >> "$OUT/dots_n$1_s$2.txt"
}

for n in $NODES; do
  for seed in $SEEDS; do
    if [ $((seed % 2)) = 1 ]; then
      run_odht "$n" "$seed"; run_dots "$n" "$seed"
    else
      run_dots "$n" "$seed"; run_odht "$n" "$seed"
    fi
  done
done

echo
echo "## OpenDHT 2.4.12 (bench/opendht/bench.py)"
/usr/bin/python3 "$HERE/opendht/summarize.py" "$OUT"/odht_*.txt
echo
echo "## DOTS overlay (dots bench overlay)"
/usr/bin/python3 "$HERE/opendht/summarize.py" "$OUT"/dots_*.txt
echo
echo "## Side by side (median over seeds; ratios DOTS/OpenDHT, < 1 = DOTS faster)"
/usr/bin/python3 "$HERE/compare.py" "$OUT" | tee "$OUT/compare.md"
echo
echo "raw runs: $OUT"
