#!/usr/bin/env bash
# SIP benchmark: a DOTS node against Kamailio on this machine, in the same run.
#
#   ./bench/sip.sh                 # full run (UDP and TCP, open and digest, ROUNDS=2)
#   QUICK=1 ./bench/sip.sh         # smoke run: short steps, few rates, one round (~7 min)
#   QUICK=1 TRANSPORTS=u1 MODES=open ./bench/sip.sh   # ~2 min
#
# What it does:
#   1. installs kamailio and sip-tester with apt if missing (root or sudo),
#   2. builds `dots` in release (`cargo build --release -p dots`),
#   3. for each round, transport (UDP `u1`, TCP `t1`) and mode:
#        open   : `dots node --open`                    vs Kamailio without auth
#        digest : `dots node --digest-algorithms MD5`   vs Kamailio with auth_db
#                 (db_text backend), the same accounts on both (`dots user add`
#                 / a generated db_text `subscriber` table, realm "dots", MD5,
#                 qop=auth; REGISTER challenged with 401, INVITE with 407)
#      starts Kamailio, runs bench/kamailio/bench.sh against it, stops it, then
#      does the same with a DOTS node (A, B, A, B, ...: drift hits both); every
#      server is started fresh (DOTS: fresh data dir) under `setsid` on the
#      same port, so bench.sh gives both the same scheduling priority,
#   4. prints one table per transport x mode: max REGISTER/s and calls/s with
#      0 failures, server CPU us per REGISTER / per call at a fixed
#      sub-saturation rate, latency p50/p99 (latency_probe.py, same transport),
#      server memory at the end of its run, each with the DOTS/Kamailio ratio
#      of the medians over rounds.
#
# Env knobs (defaults in brackets):
#   ROUNDS         [2]      A/B rounds
#   TRANSPORTS     [u1 t1]  MODES [open digest]
#   CPU_REG_RATE   [5000]   REGISTER/s step at which CPU us/REGISTER is reported
#   CPU_CALL_RATE  [500]    calls/s step at which CPU us/call is reported
#   REG_RATES      [2000 CPU_REG_RATE 8000 11000 14000 17000 20000 23000 26000 32000 38000 44000 50000 56000 62000 68000 74000]
#   CALL_RATES     [250 CPU_CALL_RATE 1000 1500 2000 2500 3000 4000 5000 6000 8000 10000]
#                  (the fixed rates are always added to the ramps)
#   DURATION       [10]     seconds per step     PROBE_N [300] latency probes
#   DIGEST_USERS   [1000]   accounts REGISTERed round-robin in digest mode
#   SIP_PORT       [5060]   HTTP_PORT [18080] (DOTS /healthz, /metrics)
#   REG_PORT [5061] UAC_PORT [5062] UAS_PORT [5070]  SIPp's ports (bench.sh)
#   WORK           [/tmp/dots-sipbench/run-<timestamp>]  all outputs
#   SKIP_BUILD     [0]      1 = use the existing target/release/dots
#   DOTS_BIN       [target/release/dots]
#   QUICK          [0]      1 = DURATION=3, REG_RATES="2000 CPU_REG_RATE 10000",
#                  CALL_RATES="250 CPU_CALL_RATE 1000", PROBE_N=50, ROUNDS=1,
#                  DIGEST_USERS=100
#   Every bench.sh knob (BENCH_NICE, SETTLE_S, WAIT_QUIET, MIN_ACHIEVED, ...) passes through.
#
# Memory is the sum of PSS over the server's processes at the end of its run
# (= RSS for the single DOTS process; Kamailio's workers share its shm, which
# plain RSS would count once per process).  Everything listens on 127.0.0.1.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
K="$HERE/kamailio"
SC="$K/scenarios"

QUICK="${QUICK:-0}"
CPU_REG_RATE="${CPU_REG_RATE:-5000}"
CPU_CALL_RATE="${CPU_CALL_RATE:-500}"
if [[ "$QUICK" == 1 ]]; then
    ROUNDS="${ROUNDS:-1}"; DURATION="${DURATION:-3}"; PROBE_N="${PROBE_N:-50}"
    DIGEST_USERS="${DIGEST_USERS:-100}"
    REG_RATES="${REG_RATES:-2000 10000}"; CALL_RATES="${CALL_RATES:-250 1000}"
fi
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10}"
PROBE_N="${PROBE_N:-300}"
DIGEST_USERS="${DIGEST_USERS:-1000}"
REG_RATES="${REG_RATES:-2000 8000 11000 14000 17000 20000 23000 26000 32000 38000 44000 50000 56000 62000 68000 74000}"
CALL_RATES="${CALL_RATES:-250 1000 1500 2000 2500 3000 4000 5000 6000 8000 10000}"
# the fixed-rate steps are always part of the ramps
REG_RATES="$(printf '%s\n' $REG_RATES "$CPU_REG_RATE" | sort -nu | tr '\n' ' ')"
CALL_RATES="$(printf '%s\n' $CALL_RATES "$CPU_CALL_RATE" | sort -nu | tr '\n' ' ')"
TRANSPORTS="${TRANSPORTS:-u1 t1}"
MODES="${MODES:-open digest}"
SIP_PORT="${SIP_PORT:-5060}"
HTTP_PORT="${HTTP_PORT:-18080}"
WORK="${WORK:-/tmp/dots-sipbench/run-$(date +%Y%m%d-%H%M%S)}"
DOTS_BIN="${DOTS_BIN:-$ROOT/target/release/dots}"
PW="bench-pw"
export DURATION PROBE_N REG_RATES CALL_RATES

mkdir -p "$WORK"
RESULTS="$WORK/results.tsv"
LOG="$WORK/sip.log"
say() { echo "$*" | tee -a "$LOG" >&2; }

# ------------------------------------------------------------------ cleanup
DOTS_PID=""
KAM_WORK="$WORK/kam"
cleanup() {
    trap '' PIPE
    if [[ -n "$DOTS_PID" ]] && kill -0 "$DOTS_PID" 2>/dev/null; then
        kill -TERM "$DOTS_PID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$DOTS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DOTS_PID" 2>/dev/null
    fi
    KAM_WORKDIR="$KAM_WORK" "$K/run-kamailio.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ install
SUDO=(); [[ "$(id -u)" != 0 ]] && SUDO=(sudo)
need=()
command -v kamailio >/dev/null 2>&1 || need+=(kamailio)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v curl >/dev/null 2>&1 || need+=(curl)
if (( ${#need[@]} )); then
    say "# installing: ${need[*]}"
    "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" \
        || { say "apt-get install ${need[*]} failed"; exit 1; }
fi
KMOD="$(kamailio -I 2>/dev/null | awk '/MODULES_DIR/{print $NF}')"
[[ -d "$KMOD" ]] || KMOD=/usr/lib/x86_64-linux-gnu/kamailio/modules
for m in db_text auth auth_db; do
    [[ -f "$KMOD/$m.so" ]] || { say "Kamailio module $m.so not found in $KMOD (Debian: package kamailio)"; exit 1; }
done

# ------------------------------------------------------------------ build
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    say "# cargo build --release -p dots"
    ( cd "$ROOT" && cargo build --release -p dots ) >>"$LOG" 2>&1 || { say "build failed, see $LOG"; exit 1; }
fi
[[ -x "$DOTS_BIN" ]] || { say "no $DOTS_BIN"; exit 1; }
# run a private copy: a rebuild of target/release during the run must not mix
# two versions of the node across rounds
cp "$DOTS_BIN" "$WORK/dots" && DOTS_BIN="$WORK/dots"

# ------------------------------------------------------------------ accounts
# the same accounts for both servers: DOTS accounts in a template data dir
# (copied into every fresh data dir), Kamailio's in a db_text subscriber table
ACCT_USERS=(benchcaller benchcallee probereg probecaller probecallee)
for i in $(seq 1 "$DIGEST_USERS"); do ACCT_USERS+=("$(printf 'ba%07d' "$i")"); done
DOTS_TMPL="$WORK/dots-accounts"
KAMDB="$WORK/kamdb"
USERS_AUTH_CSV="$WORK/users_auth.csv"
if [[ " $MODES " == *" digest "* ]]; then
    say "# creating ${#ACCT_USERS[@]} accounts (dots user add / db_text subscriber)"
    rm -rf "$DOTS_TMPL" "$KAMDB"; mkdir -p "$DOTS_TMPL" "$KAMDB"
    {
        echo 'id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) '
        n=0
        for u in "${ACCT_USERS[@]}"; do
            n=$((n + 1))
            ha1="$(printf '%s' "$u:dots:$PW" | md5sum | cut -d' ' -f1)"
            ha1b="$(printf '%s' "$u@127.0.0.1:dots:$PW" | md5sum | cut -d' ' -f1)"
            echo "$n:$u:127.0.0.1:$PW:$ha1:$ha1b"
        done
    } > "$KAMDB/subscriber"
    printf 'id(int,auto) table_name(string) table_version(int) \n0:version:1\n0:subscriber:7\n' > "$KAMDB/version"
    for u in "${ACCT_USERS[@]}"; do
        "$DOTS_BIN" user add "$u" --password "$PW" --data-dir "$DOTS_TMPL" >/dev/null 2>>"$LOG" \
            || { say "dots user add $u failed"; exit 1; }
    done
    { echo SEQUENTIAL; for i in $(seq 1 "$DIGEST_USERS"); do printf 'ba%07d;[authentication username=ba%07d password=%s]\n' "$i" "$i" "$PW"; done; } > "$USERS_AUTH_CSV"
fi

# ------------------------------------------------------------------ servers
pid_tree() { # root pid -> root + descendants
    ps -eo pid=,ppid= | awk -v r="$1" '{par[$1]=$2} END{keep[r]=1; do { ch=0; for(p in par) if(!(p in keep) && (par[p] in keep)) {keep[p]=1; ch=1} } while(ch); for(p in keep) printf "%s ", p; print ""}'
}
mem_kib() { # pids -> "pss_kib rss_kib"
    local p pss=0 rss=0 a b
    for p in "$@"; do
        [[ -r /proc/$p/smaps_rollup ]] || continue
        read -r a b < <(awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{print p+0, r+0}' "/proc/$p/smaps_rollup")
        pss=$((pss + a)); rss=$((rss + b))
    done
    echo "$pss $rss"
}
port_free() { ! ss -H -lntu "sport = :$SIP_PORT" 2>/dev/null | grep -q .; }
wait_port_free() { for _ in $(seq 1 100); do port_free && return 0; sleep 0.1; done; return 1; }

start_kam() { # mode -> prints pid
    local defs=""
    [[ "$1" == digest ]] && defs="WITH_AUTH DBURL=\"text://$KAMDB\""
    KAM_WORKDIR="$KAM_WORK" KAM_PORT="$SIP_PORT" KAM_DEFINES="$defs" "$K/run-kamailio.sh"
}
stop_kam() { KAM_WORKDIR="$KAM_WORK" "$K/run-kamailio.sh" stop >/dev/null 2>&1; }

start_dots() { # mode datadir -> sets DOTS_PID
    local mode="$1" dd="$2" args=()
    rm -rf "$dd"
    if [[ "$mode" == digest ]]; then cp -a "$DOTS_TMPL" "$dd"; args=(--digest-algorithms MD5); else mkdir -p "$dd"; args=(--open); fi
    setsid "$DOTS_BIN" node --data-dir "$dd" --sip "127.0.0.1:$SIP_PORT" --http "127.0.0.1:$HTTP_PORT" \
        --log warn "${args[@]}" </dev/null >"$dd.log" 2>&1 &
    DOTS_PID=$!
    for _ in $(seq 1 100); do
        kill -0 "$DOTS_PID" 2>/dev/null || { say "dots node exited, see $dd.log"; tail -5 "$dd.log" >&2; return 1; }
        curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    say "dots node not healthy after 10 s"; return 1
}
stop_dots() {
    [[ -n "$DOTS_PID" ]] || return 0
    kill -TERM "$DOTS_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DOTS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DOTS_PID" 2>/dev/null
    wait "$DOTS_PID" 2>/dev/null
    DOTS_PID=""
}

# ------------------------------------------------------------------ one run
# extract "key=value" from a line
kv() { grep -o "\(^\| \)$1=[^ ]*" <<<"$2" | head -1 | cut -d= -f2; }
probe_field() { # summary metric field
    local l; l="$(grep "^probe $2 " "$1" | tail -1)"; kv "$3" "$l"
}
run_one() { # round transport mode sut
    local rd="$1" tr="$2" mode="$3" sut="$4"
    local out="$WORK/r$rd-$tr-$mode-$sut"
    wait_port_free || { say "port $SIP_PORT still busy"; return 1; }
    local pid
    if [[ "$sut" == kamailio ]]; then
        pid="$(start_kam "$mode")" || { say "kamailio start failed (see $KAM_WORK/kamailio.log)"; return 1; }
    else
        start_dots "$mode" "$WORK/dots-data-r$rd-$tr-$mode" || return 1
        pid="$DOTS_PID"
    fi
    local env=(TRANSPORT="$tr" OUTDIR="$out" TARGET_PID="$pid")
    local pargs="--transport $([[ $tr == t1 ]] && echo tcp || echo udp)"
    if [[ "$mode" == digest ]]; then
        env+=(REG_SCENARIO="$SC/register_auth.xml" REG_CSV="$USERS_AUTH_CSV"
              UAC_SCENARIO="$SC/uac_auth.xml" UAC_ARGS="-key caller benchcaller -au benchcaller -ap $PW -auth_uri benchcallee@127.0.0.1:$SIP_PORT"
              UAS_REG_SCENARIO="$SC/reg_uas_auth.xml" UAS_REG_ARGS="-au benchcallee -ap $PW")
        pargs+=" --password $PW --reg-user probereg --caller probecaller --callee probecallee"
    fi
    env+=(PROBE_ARGS="$pargs")
    say "# round $rd $tr $mode $sut: pid $pid, bench.sh -> $out"
    env "${env[@]}" "$K/bench.sh" "127.0.0.1:$SIP_PORT" >"$out.stdout" 2>&1
    local pss rss; read -r pss rss < <(mem_kib $(pid_tree "$pid"))
    if [[ "$sut" == kamailio ]]; then stop_kam; else stop_dots; fi
    local s="$out/summary.txt"
    local regl calll
    regl="$(grep '^register_rate=' "$s" | tail -1)"; calll="$(grep '^call_rate=' "$s" | tail -1)"
    local cpur cpuc
    cpur="$(kv target_cpu_us_per_op "$(grep "^step test=register target_rate=$CPU_REG_RATE " "$s" | awk '/ failed=0 / && / saturated=no /' | tail -1)")"
    cpuc="$(kv target_cpu_us_per_op "$(grep "^step test=call target_rate=$CPU_CALL_RATE " "$s" | awk '/ failed=0 / && / saturated=no /' | tail -1)")"
    local bgs; bgs="$(grep -o 'bg_busy_before=[0-9]*' "$s" | cut -d= -f2 | sort -n | awk '{v[NR]=$1} END{if(NR) printf "%s/%s", v[int((NR+1)/2)], v[NR]; else print "-"}')"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$rd" "$tr" "$mode" "$sut" \
        "$(kv register_rate "$regl")" "$(kv call_rate "$calll")" "${cpur:--}" "${cpuc:--}" \
        "$(probe_field "$s" register_us p50)" "$(probe_field "$s" register_us p99)" \
        "$(probe_field "$s" invite_200_us p50)" "$(probe_field "$s" invite_200_us p99)" \
        "$(probe_field "$s" bye_200_us p50)" "$(probe_field "$s" bye_200_us p99)" \
        "$((pss / 1024))" "$((rss / 1024))" "$bgs" >> "$RESULTS"
    say "$(tail -1 "$RESULTS")"
}

# ------------------------------------------------------------------ main
{
    echo "# bench/sip.sh $(date -Is)  work=$WORK"
    echo "# host: nproc=$(nproc) kernel=$(uname -r) mem=$(free -h | awk '/^Mem:/{print $2}')"
    echo "# $(kamailio -v | head -1 | sed 's/^version: //'); $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*'); $(rustc --version 2>/dev/null); dots $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted')"
    echo "# ROUNDS=$ROUNDS TRANSPORTS=[$TRANSPORTS] MODES=[$MODES] DURATION=${DURATION}s REG_RATES=[$REG_RATES] CALL_RATES=[$CALL_RATES] CPU at ${CPU_REG_RATE} REGISTER/s and ${CPU_CALL_RATE} calls/s PROBE_N=$PROBE_N DIGEST_USERS=$DIGEST_USERS"
    echo "# other benchmarks running at start: $(pgrep -af 'bench overlay|bench.py' | grep -v pgrep | wc -l)"
} | tee -a "$LOG" >&2
printf 'round\ttransport\tmode\tsut\treg_max\tcall_max\tcpu_reg_us\tcpu_call_us\treg_p50\treg_p99\tinv_p50\tinv_p99\tbye_p50\tbye_p99\tpss_mib\trss_mib\tbg_busy_med_max\n' > "$RESULTS"

wait_port_free || { say "port $SIP_PORT is in use: set SIP_PORT"; exit 1; }
for p in "${REG_PORT:-5061}" "${UAC_PORT:-5062}" "${UAS_PORT:-5070}" "$HTTP_PORT"; do
    if ss -H -lntu "sport = :$p" 2>/dev/null | grep -q .; then
        say "port $p (SIPp / HTTP) is in use: set REG_PORT, UAC_PORT, UAS_PORT or HTTP_PORT"; exit 1
    fi
done
for rd in $(seq 1 "$ROUNDS"); do
    for tr in $TRANSPORTS; do
        for mode in $MODES; do
            for sut in kamailio dots; do
                run_one "$rd" "$tr" "$mode" "$sut"
            done
        done
    done
done

python3 "$HERE/sip_table.py" "$RESULTS" "$CPU_REG_RATE" "$CPU_CALL_RATE" | tee "$WORK/table.md"
say "# results: $RESULTS, table: $WORK/table.md, log: $LOG"
