#!/usr/bin/env bash
# Memory benchmark: COUNT distinct AoRs, one contact each, on one DOTS node.
#
#   ./bench/memory.sh                  # 1,000,000 AoRs
#   COUNT=20000 ./bench/memory.sh      # quick run
#
# Starts a release node (`dots node --open`, fresh data dir under /tmp),
# registers COUNT distinct AoRs (m0000001..) with SIPp
# (bench/kamailio/scenarios/register.xml, one REGISTER per AoR from a
# generated CSV, UDP, RATE REGISTER/s), showing progress, then prints:
#   * the node's RSS (VmRSS from /proc) before and after, and the bytes per
#     contact (RSS delta / COUNT),
#   * the size of node.redb on disk,
#   * dots_registrar_contacts from /metrics (must equal COUNT),
# then kills the node with SIGKILL, restarts it on the same data dir and
# measures the time from the restart until /healthz answers and until a
# REGISTER query (no Contact) for one of the AoRs returns its binding:
#   "restart ready in X s".
#
# Env knobs (defaults in brackets):
#   COUNT      [1000000]  AoRs
#   RATE       [4000]     REGISTER/s (a rate the node sustains without failures)
#   SIP_PORT   [5060]     HTTP_PORT [18080]
#   WORK       [/tmp/dots-membench/run-<timestamp>]
#   SKIP_BUILD [0]        1 = use the existing target/release/dots
#   DOTS_BIN   [target/release/dots]
# Everything listens on 127.0.0.1; the node is stopped at exit.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SC="$HERE/kamailio/scenarios"
COUNT="${COUNT:-1000000}"
RATE="${RATE:-4000}"
SIP_PORT="${SIP_PORT:-5060}"
HTTP_PORT="${HTTP_PORT:-18080}"
WORK="${WORK:-/tmp/dots-membench/run-$(date +%Y%m%d-%H%M%S)}"
DOTS_BIN="${DOTS_BIN:-$ROOT/target/release/dots}"
DATA="$WORK/data"
mkdir -p "$WORK"
ulimit -n 65536 2>/dev/null || true

NODE_PID=""; SIPP_PID=""
cleanup() {
    [[ -n "$SIPP_PID" ]] && kill "$SIPP_PID" 2>/dev/null
    if [[ -n "$NODE_PID" ]] && kill -0 "$NODE_PID" 2>/dev/null; then
        kill -TERM "$NODE_PID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NODE_PID" 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SUDO=(); [[ "$(id -u)" != 0 ]] && SUDO=(sudo)
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v curl >/dev/null 2>&1 || need+=(curl)
if (( ${#need[@]} )); then
    "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" || exit 1
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "# cargo build --release -p dots" >&2
    ( cd "$ROOT" && cargo build --release -p dots ) >"$WORK/build.log" 2>&1 || { echo "build failed, see $WORK/build.log" >&2; exit 1; }
fi
[[ -x "$DOTS_BIN" ]] || { echo "no $DOTS_BIN" >&2; exit 1; }
cp "$DOTS_BIN" "$WORK/dots" && DOTS_BIN="$WORK/dots"   # private copy: immune to rebuilds
if ss -H -lntu "sport = :$SIP_PORT" 2>/dev/null | grep -q . || ss -H -lnt "sport = :$HTTP_PORT" 2>/dev/null | grep -q .; then
    echo "port $SIP_PORT or $HTTP_PORT in use: set SIP_PORT / HTTP_PORT" >&2; exit 1
fi

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }
metric() { curl -fsS --max-time 5 "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null | awk -v m="$1" '$1==m{print $2}'; }
start_node() { # -> NODE_PID
    setsid "$DOTS_BIN" node --open --data-dir "$DATA" --sip "127.0.0.1:$SIP_PORT" --http "127.0.0.1:$HTTP_PORT" \
        --log warn </dev/null >>"$WORK/node.log" 2>&1 &
    NODE_PID=$!
}
wait_healthy() { # timeout_s
    local end=$(( $(date +%s) + $1 ))
    while (( $(date +%s) < end )); do
        kill -0 "$NODE_PID" 2>/dev/null || return 1
        curl -fsS --max-time 5 "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && return 0
        sleep 0.01
    done
    return 1
}
now() { date +%s.%N; }

echo "# bench/memory.sh $(date -Is) COUNT=$COUNT RATE=$RATE work=$WORK" >&2
echo "# host: nproc=$(nproc) kernel=$(uname -r); dots $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted')" >&2

rm -rf "$DATA"; mkdir -p "$DATA"
start_node
wait_healthy 30 || { echo "node did not start, see $WORK/node.log" >&2; exit 1; }
sleep 1
RSS0="$(rss_kib "$NODE_PID")"
echo "# node pid $NODE_PID, RSS before: $((RSS0 / 1024)) MiB" >&2

CSV="$WORK/aors.csv"
{ echo SEQUENTIAL; seq -f 'm%07g' 1 "$COUNT"; } > "$CSV"
TO=$(( COUNT / RATE * 3 + 60 ))
( cd "$WORK" && exec setsid sipp "127.0.0.1:$SIP_PORT" -sf "$SC/register.xml" -inf "$CSV" -i 127.0.0.1 -p 5061 \
      -t u1 -r "$RATE" -m "$COUNT" -timeout "${TO}s" -max_socket 4096 -buff_size 4194304 \
      -default_behaviors all,-bye -nostdin -trace_stat -stf stat.csv -fd 5 -trace_err >sipp.log 2>&1 ) &
SIPP_PID=$!
T0="$(now)"
# progress every 10 s (bounded by sipp's own -timeout)
while kill -0 "$SIPP_PID" 2>/dev/null; do
    sleep 10
    c="$(metric dots_registrar_contacts)"
    el="$(awk -v a="$T0" -v b="$(now)" 'BEGIN{printf "%.0f", b-a}')"
    echo "# ${el}s: contacts=${c:-?} / $COUNT  RSS=$(( $(rss_kib "$NODE_PID" || echo 0) / 1024 )) MiB" >&2
done
wait "$SIPP_PID"; SIPP_PID=""
T1="$(now)"
col() { awk -F';' -v n="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==n) c=i; next} {l=$0} END{split(l,a,";"); print a[c]}' "$WORK/stat.csv"; }
SUCC="$(col 'SuccessfulCall(C)')"; FAIL="$(col 'FailedCall(C)')"
sleep 2
RSS1="$(rss_kib "$NODE_PID")"
CONTACTS="$(metric dots_registrar_contacts)"
REDB_B="$(stat -c %s "$DATA/node.redb" 2>/dev/null || echo 0)"
REDB_DU="$(du -k "$DATA/node.redb" 2>/dev/null | cut -f1)"
ELAPSED="$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.0f", b-a}')"

# restart: SIGKILL, same data dir; time to /healthz and to a REGISTER query
# answering with the binding of one of the AoRs
QUERY_AOR="$(printf 'm%07d' "$(( (COUNT + 1) / 2 ))")"
kill -KILL "$NODE_PID"; wait "$NODE_PID" 2>/dev/null; NODE_PID=""
for _ in $(seq 1 100); do ss -H -lntu "sport = :$SIP_PORT" | grep -q . || break; sleep 0.05; done
R0="$(now)"
start_node
HEALTHY=""; READY=""
wait_healthy 120 && HEALTHY="$(awk -v a="$R0" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}')"
if python3 - "$SIP_PORT" "$QUERY_AOR" 120 <<'EOF'
import random, socket, sys, time
port, aor, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); lp = s.getsockname()[1]
end = time.time() + limit
cid = "%x@memq" % random.getrandbits(64); n = 0
while time.time() < end:
    n += 1
    m = ("REGISTER sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%x;rport\r\n"
         "Max-Forwards: 70\r\nFrom: <sip:%s@127.0.0.1>;tag=q%d\r\nTo: <sip:%s@127.0.0.1>\r\n"
         "Call-ID: %s\r\nCSeq: %d REGISTER\r\nContent-Length: 0\r\n\r\n") % (
        port, lp, random.getrandbits(48), aor, n, aor, cid, n)
    try:
        s.sendto(m.encode(), ("127.0.0.1", port))
        s.settimeout(0.05)
        d = s.recv(65535).decode(errors="replace")
        if d.startswith("SIP/2.0 200") and ("\r\nContact:" in d or "\r\nm:" in d) and (aor + "@") in d:
            sys.exit(0)
    except OSError:
        time.sleep(0.01)
sys.exit(1)
EOF
then READY="$(awk -v a="$R0" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}')"; fi
sleep 1
RSS2="$(rss_kib "$NODE_PID")"
CONTACTS2="$(metric dots_registrar_contacts)"

awk -v n="$COUNT" -v s="$SUCC" -v f="$FAIL" -v el="$ELAPSED" -v r0="$RSS0" -v r1="$RSS1" -v c="$CONTACTS" \
    -v rb="$REDB_B" -v rdu="$REDB_DU" -v h="${HEALTHY:--}" -v rd="${READY:-not ready}" -v r2="$RSS2" -v c2="$CONTACTS2" -v q="$QUERY_AOR" 'BEGIN{
    printf "\n| memory benchmark (%d AoRs, one contact each) | value |\n|---|---|\n", n
    printf "| REGISTERs sent / succeeded / failed (SIPp) | %d / %d / %d in %d s |\n", n, s, f, el
    printf "| dots_registrar_contacts (/metrics) | %s%s |\n", c, (c==n ? "" : "  (expected " n ")")
    printf "| node RSS before / after | %.0f MiB / %.0f MiB |\n", r0/1024, r1/1024
    printf "| bytes per contact (RSS delta / contacts) | %.0f B |\n", (c>0 ? (r1-r0)*1024/c : 0)
    printf "| node.redb on disk (size / allocated) | %.0f MiB / %.0f MiB (%.0f B per contact) |\n", rb/1048576, rdu/1024, (c>0 ? rb/c : 0)
    printf "| restart after kill -9: /healthz answers | %s s |\n", h
    printf "| restart ready in (REGISTER query for %s returns its binding) | %s s |\n", q, rd
    printf "| after restart: RSS / dots_registrar_contacts | %.0f MiB / %s |\n", r2/1024, c2
}' | tee "$WORK/memory.md"
echo "# work dir: $WORK" >&2
