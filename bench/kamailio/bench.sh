#!/usr/bin/env bash
# SIP registrar/proxy benchmark (SIPp), target-agnostic.
#
#   bench.sh TARGET_HOST:PORT
#
# Runs against ANY registrar + stateful proxy that (a) answers REGISTER with
# 200 OK and stores the binding, and (b) routes an INVITE for a registered AoR
# to its contact, Record-Routing itself so that ACK/BYE are loose-routed back
# through it.  Loopback only: TARGET_HOST must be in 127.0.0.0/8.
#
# Tests (env TESTS, default "register call latency"):
#   register : sipp UAC, scenarios/register.xml, unique AoR per call from a
#              USERS-line injection CSV (SEQUENTIAL; wraps -> refresh).
#   call     : sipp UAS (scenarios/uas.xml) on UAS_PORT registered as CALLEE
#              (scenarios/reg_uas.xml), then sipp UAC (scenarios/uac.xml)
#              INVITE/100/180/200/ACK/[hold]/BYE/200 through the target.
#   latency  : latency_probe.py, PROBE_N sequential REGISTERs and calls (UDP),
#              microsecond timing (sipp's own RTDs are 4 ms-quantised here).
#
# For each test it ramps the rate (REG_RATES / CALL_RATES, each step lasts
# ~DURATION s, i.e. -m rate*DURATION) and stops at the first step with a
# failure or that falls below MIN_ACHIEVED (fraction of target).  Per step it
# prints a "step ..." line; at the end, one line per test:
#     register_rate=<highest achieved REGISTER/s with 0 failed> failed=0 ...
#     call_rate=<highest achieved calls/s with 0 failed> failed=0 ...
#     probe register_us ... / probe invite_200_us ... / probe bye_200_us ...
# "sustained" = failed==0 AND achieved >= MIN_ACHIEVED*target.  "failed=<n>" on
# the summary line is the failure count of the first failing step (0 if the
# ramp ended by saturation or ran out of rates).  cpu_us_per_op = target CPU
# time / successful transactions (calls) -- much less noisy than the ceilings
# on a shared host; compare SUTs on both.
#
# Env knobs (defaults in brackets):
#   TESTS        [register call]
#   REG_RATES    [1000 2000 3000 4000 5000 6000 8000 10000 12000 15000 20000]
#   CALL_RATES   [250 500 750 1000 1250 1500 2000 2500 3000 4000 5000]
#   DURATION     [10]     seconds per step
#   TRANSPORT    [u1]     sipp -t value: u1 (UDP, one socket) or t1 (TCP, one conn)
#   HOLD_MS      [0]      call hold time between ACK and BYE (sipp -d)
#   USERS        [100000] size of REGISTER user pool
#   CALLEE       [benchcallee]
#   UAS_PORT     [5070]   REG_PORT [5061]  UAC_PORT [5062]
#   MIN_ACHIEVED [0.90]   achieved/target below this = saturated: the step does not
#                         count as "sustained" and the ramp stops
#   STOP_ON_FAIL [1]      0 = run all rates regardless
#   TARGET_PID   []       pid(s) of the system under test for CPU% (default:
#                         whoever holds the target UDP port, plus descendants)
#   OUTDIR       [/tmp/kam/bench-<timestamp>]
#   SIPP         [sipp]
#   BENCH_NICE   [-10]    scheduling priority for sipp AND the target: every
#                         thread is reniced and, because this kernel has
#                         sched_autogroup enabled (nice alone does not beat other
#                         sessions' load), each sipp runs in its own session
#                         whose autogroup nice is set; the target's autogroup is
#                         set too IF the target is a session leader (start it
#                         with setsid, as run-kamailio.sh does).  "" disables.
#                         Use the same value for every SUT.
#   SIPP_BUF     [4194304] sipp -buff_size (socket snd/rcv buffer)
#   SETTLE_S     [36]     idle seconds before a register or call test that is not
#                         the first, so that
#                         work a server defers (e.g. a UDP non-INVITE server
#                         transaction lives on for Timer J = 64*T1 = 32 s after
#                         its answer, RFC 3261 17.2.2) lands between tests and
#                         is not charged to the next test's CPU per op; the
#                         target's CPU during the wait is reported ("settle")
#   WAIT_QUIET   []       if set (e.g. 40): before each step wait (<= WAIT_QUIET_MAX_S,
#                         default 120 s) until host busy% measured over 2 s is below it
#   TRACE_RTT    [0]      1 = also -trace_rtt (exact per-call RTT list; costs sipp CPU)
#   REG_SCENARIO [scenarios/register.xml]  REGISTER scenario (e.g. register_auth.xml)
#   REG_CSV      []       REGISTER injection CSV (default: generated, USERS lines bu0000001..)
#   UAC_SCENARIO [scenarios/uac.xml]       caller scenario (e.g. uac_auth.xml)
#   UAS_REG_SCENARIO [scenarios/reg_uas.xml] callee REGISTER scenario (e.g. reg_uas_auth.xml)
#   UAC_ARGS     []       extra sipp arguments for the caller (e.g. -au NAME -ap PW -key caller NAME)
#   UAS_REG_ARGS []       extra sipp arguments for the callee REGISTER (e.g. -au NAME -ap PW)
#   PROBE_ARGS   []       extra latency_probe.py arguments (e.g. --transport tcp, --password ...)
#
# NOTE: sipp 3.6.1 timestamps with CLOCK_MONOTONIC_COARSE (4 ms ticks on this
# kernel), so rt*_ms figures are quantised to ~4 ms: only tails are meaningful.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SC="$HERE/scenarios"
REG_SCENARIO="${REG_SCENARIO:-$SC/register.xml}"
UAC_SCENARIO="${UAC_SCENARIO:-$SC/uac.xml}"
UAS_REG_SCENARIO="${UAS_REG_SCENARIO:-$SC/reg_uas.xml}"
read -r -a UAC_ARGS_A <<<"${UAC_ARGS:-}"
read -r -a UAS_REG_ARGS_A <<<"${UAS_REG_ARGS:-}"
read -r -a PROBE_ARGS_A <<<"${PROBE_ARGS:-}"

TARGET="${1:-}"
if [[ -z "$TARGET" || "$TARGET" != *:* ]]; then
    echo "usage: $0 TARGET_HOST:PORT   (loopback only)" >&2; exit 2
fi
THOST="${TARGET%:*}"; TPORT="${TARGET##*:}"
if [[ ! "$THOST" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "refusing: target $THOST is not a 127.0.0.0/8 address" >&2; exit 2
fi

TESTS="${TESTS:-register call latency}"
PROBE_N="${PROBE_N:-300}"
REG_RATES="${REG_RATES:-1000 2000 3000 4000 5000 6000 8000 10000 12000 15000 20000}"
CALL_RATES="${CALL_RATES:-250 500 750 1000 1250 1500 2000 2500 3000 4000 5000}"
DURATION="${DURATION:-10}"
TRANSPORT="${TRANSPORT:-u1}"
HOLD_MS="${HOLD_MS:-0}"
USERS="${USERS:-100000}"
CALLEE="${CALLEE:-benchcallee}"
UAS_PORT="${UAS_PORT:-5070}"
REG_PORT="${REG_PORT:-5061}"
UAC_PORT="${UAC_PORT:-5062}"
MIN_ACHIEVED="${MIN_ACHIEVED:-0.90}"
STOP_ON_FAIL="${STOP_ON_FAIL:-1}"
SIPP="${SIPP:-sipp}"
BENCH_NICE="${BENCH_NICE--10}"
SIPP_BUF="${SIPP_BUF:-4194304}"   # sipp socket buffers (default 64 KiB overflows at >10k msg/s)
NICE_CMD=(); [[ -n "$BENCH_NICE" ]] && NICE_CMD=(nice -n "$BENCH_NICE")
OUTDIR="${OUTDIR:-/tmp/kam/bench-$(date +%Y%m%d-%H%M%S)}"
LOCAL_IP="127.0.0.1"
CLK_TCK="$(getconf CLK_TCK)"

mkdir -p "$OUTDIR"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { echo "$*" >&2; echo "$*" >> "$OUTDIR/summary.txt"; }

# ---------------------------------------------------------------- helpers
# pids of the system under test (+ all descendants)
target_pids() {
    local roots="${TARGET_PID:-}"
    if [[ -z "$roots" ]]; then
        roots="$(ss -H -lntup "sport = :$TPORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | tr '\n' ' ')"
    fi
    [[ -z "$roots" ]] && return 0
    # expand descendants (one ps snapshot)
    ps -eo pid=,ppid= | awk -v roots="$roots" '
        BEGIN{n=split(roots,r," "); for(i=1;i<=n;i++) keep[r[i]]=1}
        {par[$1]=$2}
        END{ do { ch=0; for(p in par) if(!(p in keep) && (par[p] in keep)) {keep[p]=1; ch=1} } while(ch)
             for(p in keep) printf "%s ", p; print "" }'
}

# sum of utime+stime ticks over a pid list (processes incl. all threads)
cpu_ticks() {
    local sum=0 p
    for p in "$@"; do
        [[ -r /proc/$p/stat ]] || continue
        local t
        t="$(sed -E 's/^.*\) //' /proc/$p/stat 2>/dev/null | awk '{print $12+$13}')" || continue
        sum=$(( sum + ${t:-0} ))
    done
    echo "$sum"
}
host_busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
# drops counted on the target's listening UDP socket(s) (/proc/net/udp, local port TPORT)
target_sock_drops() { awk -v p="$(printf '%04X' "$TPORT")" 'NR>1{split($2,a,":"); if(a[2]==p) d+=$NF} END{print d+0}' /proc/net/udp; }
udp_rcvbuf_errors() { awk '/^Udp:/{if(!h){for(i=1;i<=NF;i++)c[$i]=i;h=1}else print $c["RcvbufErrors"]}' /proc/net/snmp; }
now() { date +%s.%N; }
# prioritise a process: autogroup nice (only if it leads its own session) + all threads
prioritise() { # pid
    [[ -n "$BENCH_NICE" && -d /proc/$1 ]] || return 0
    local sid; sid="$(awk '{print $4}' < <(sed -E 's/^.*\) //' /proc/$1/stat))"
    local ag=no
    if [[ "$sid" == "$1" ]] && echo "$BENCH_NICE" > "/proc/$1/autogroup" 2>/dev/null; then ag=yes; fi
    local t; for t in /proc/$1/task/*; do renice -n "$BENCH_NICE" -p "${t##*/}" >/dev/null 2>&1; done
    echo "$ag"
}
bg_busy() { local a b c d; read -r a b < <(host_busy_ticks); sleep 2; read -r c d < <(host_busy_ticks)
            awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN{printf "%.0f", (d>b? (c-a)/(d-b)*100 : 0)}'; }

# read a named column from the last line of a sipp -trace_stat CSV
stat_col() { # file colname
    awk -F';' -v n="$2" 'NR==1{for(i=1;i<=NF;i++) if($i==n) c=i; next} {l=$0} END{split(l,a,";"); print (c? a[c] : "")}' "$1"
}
stat_epoch() { # file colname(StartTime|CurrentTime) -> epoch seconds
    stat_col "$1" "$2" | awk -F'\t' '{print $3}'
}
# latency summary for rtd N from the ResponseTimeRepartition<N> histogram in
# the stat CSV (bucket upper bounds, ms; sipp measures RTDs at 1 ms resolution)
hist_stats() { # statfile rtdno
    awk -F';' -v r="$2" '
        NR==1{ for(i=1;i<=NF;i++){ h[i]=$i
                 if($i=="ResponseTime" r "(C)") mc=i } next }
        { l=$0 }
        END{ n=split(l,a,";"); tot=0; k=0
             pre="ResponseTimeRepartition" r "_"
             for(i=1;i<=n;i++) if(index(h[i],pre)==1){ k++; b[k]=substr(h[i],length(pre)+1); c[k]=a[i]; tot+=a[i] }
             if(tot==0){ printf "n=0"; exit }
             split("0.5 0.9 0.99 0.999",q," "); split("p50 p90 p99 p99.9",qn," ")
             out=sprintf("n=%d", tot)
             for(j=1;j<=4;j++){ cum=0; for(i=1;i<=k;i++){ cum+=c[i]; if(cum>=q[j]*tot){ out=out sprintf(" %s%s", qn[j], (b[i] ~ /^</ ? b[i] : b[i])); break } } }
             split(a[mc],t,":"); m=(t[1]*3600+t[2]*60+t[3])*1000 + t[4]/1000
             printf "%s mean=%.1f", out, m }' "$1"
}
# percentiles of rtd N (ms, 1 ms resolution in sipp) from -trace_rtt file
rtt_stats() { # file rtdno
    awk -F';' -v r="$2" 'NR>1 && $3==r {print $2}' "$1" 2>/dev/null | sort -n | awk '
        {v[NR]=$1; s+=$1}
        END{ if(NR==0){print "n=0"; exit}
             i50=int(NR*0.50); if(i50<1)i50=1; i90=int(NR*0.90); if(i90<1)i90=1
             i99=int(NR*0.99); if(i99<1)i99=1; i999=int(NR*0.999); if(i999<1)i999=1
             printf "mean=%.2f p50=%d p90=%d p99=%d p99.9=%d max=%d", s/NR, v[i50], v[i90], v[i99], v[i999], v[NR] }'
}

# run sipp in the foreground, in its own dir, measuring CPU of target + sipp
# usage: run_sipp DIR EXPECTED_CALLS -- sipp args...
STEP_RES=""
run_sipp() {
    local dir="$1" expected="$2"; shift 3
    mkdir -p "$dir"
    local tp; tp="$(target_pids)"
    local bgb; bgb="$(bg_busy)"   # host load just before the step (2 s idle gap)
    if [[ -n "${WAIT_QUIET:-}" ]]; then   # optionally wait for a quieter host
        local waited=0
        while (( bgb > WAIT_QUIET && waited < ${WAIT_QUIET_MAX_S:-120} )); do bgb="$(bg_busy)"; waited=$(( waited + 2 )); done
    fi
    local t0 c0 h0 u0 sipp_pid extra_pids
    extra_pids="${EXTRA_PIDS:-}"
    read -r hb0 ht0 < <(host_busy_ticks)
    u0="$(udp_rcvbuf_errors)"; local d0; d0="$(target_sock_drops)"
    c0="$(cpu_ticks $tp)"; e0="$(cpu_ticks $extra_pids)"
    t0="$(now)"
    local rttopt=(); [[ "${TRACE_RTT:-0}" == 1 ]] && rttopt=(-trace_rtt -rtt_freq 1)
    local full=("$SIPP" "$@" -nostdin -trace_stat -stf stat.csv -fd 1 "${rttopt[@]}" -trace_err)
    printf '%q ' "${full[@]}" > "$dir/cmd.txt"
    # hard bound on the step (sipp's own -timeout does not always end a TCP run)
    local hard=$(( DURATION * 4 + 90 + HOLD_MS / 1000 ))
    ( cd "$dir" && exec setsid "${NICE_CMD[@]}" /usr/bin/time -o sipp_time.txt -f '%e %U %S' timeout -k 5 "$hard" "${full[@]}" >screen.log 2>&1 ) &
    sipp_pid=$!
    prioritise "$sipp_pid" >/dev/null
    wait "$sipp_pid"; local rc=$?
    local t1; t1="$(now)"
    local c1 e1; c1="$(cpu_ticks $tp)"; e1="$(cpu_ticks $extra_pids)"
    read -r hb1 ht1 < <(host_busy_ticks)
    local u1; u1="$(udp_rcvbuf_errors)"; local d1; d1="$(target_sock_drops)"
    local wall; wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')"
    local f="$dir/stat.csv"
    if [[ ! -s "$f" ]]; then
        STEP_RES="rc=$rc achieved=0 succ=0 failed=$expected retrans=0 elapsed=0"; return
    fi
    local succ fail retr st ct el
    succ="$(stat_col "$f" 'SuccessfulCall(C)')"; fail="$(stat_col "$f" 'FailedCall(C)')"
    retr="$(stat_col "$f" 'Retransmissions(C)')"
    st="$(stat_epoch "$f" StartTime)"; ct="$(stat_epoch "$f" CurrentTime)"
    el="$(awk -v a="$st" -v b="$ct" 'BEGIN{printf "%.3f", b-a}')"
    # calls never completed (e.g. sipp -timeout hit) also count as failed
    local missing=$(( expected - succ - fail )); (( missing < 0 )) && missing=0
    fail=$(( fail + missing ))
    local ach; ach="$(awk -v s="$succ" -v e="$el" 'BEGIN{printf "%.1f", (e>0? s/e : 0)}')"
    local tcpu ecpu hcpu
    tcpu="$(awk -v a="$c0" -v b="$c1" -v w="$wall" -v k="$CLK_TCK" 'BEGIN{printf "%.0f", (b-a)/k/w*100}')"
    ecpu="$(awk -v a="$e0" -v b="$e1" -v w="$wall" -v k="$CLK_TCK" 'BEGIN{printf "%.0f", (b-a)/k/w*100}')"
    hcpu="$(awk -v a="$hb0" -v b="$hb1" -v x="$ht0" -v y="$ht1" 'BEGIN{printf "%.0f", (y>x? (b-a)/(y-x)*100 : 0)}')"
    local scpu; scpu="$(tail -1 "$dir/sipp_time.txt" 2>/dev/null | awk '{ if ($1>0) printf "%.0f", ($2+$3)/$1*100; else print 0 }')"
    local cpuop sippop
    cpuop="$(awk -v a="$c0" -v b="$c1" -v k="$CLK_TCK" -v n="$succ" 'BEGIN{printf "%.1f", (n>0? (b-a)/k/n*1e6 : 0)}')"
    sippop="$(awk -v n="$succ" -v u="$(tail -1 "$dir/sipp_time.txt" 2>/dev/null)" -v a="$e0" -v b="$e1" -v k="$CLK_TCK" 'BEGIN{split(u,t," "); printf "%.1f", (n>0? ((t[2]+t[3]) + (b-a)/k)/n*1e6 : 0)}')"
    STEP_RES="rc=$rc achieved=$ach succ=$succ failed=$fail target_cpu_us_per_op=$cpuop sipp_cpu_us_per_op=$sippop retrans=${retr:-0} elapsed=$el target_cpu=${tcpu}% sipp_uac_cpu=${scpu}% sipp_uas_cpu=${ecpu}% host_busy=${hcpu}% bg_busy_before=${bgb}% udp_rcvbuf_err=$(( u1 - u0 )) target_sock_drops=$(( d1 - d0 ))"
    STEP_RES+=" rt1_ms[$(hist_stats "$f" 1)]"
    [[ "$*" == *"$UAC_SCENARIO"* ]] && STEP_RES+=" rt2_ms[$(hist_stats "$f" 2)]"
    if [[ "${TRACE_RTT:-0}" == 1 ]]; then
        local rf; rf="$(ls "$dir"/*_rtt.csv 2>/dev/null | head -1)"
        STEP_RES+=" rtt1_exact_ms[$(rtt_stats "$rf" 1)]"
        [[ "$*" == *"$UAC_SCENARIO"* ]] && STEP_RES+=" rtt2_exact_ms[$(rtt_stats "$rf" 2)]"
    fi
}
kv() { sed -E "s/.*(^| )$1=([^ ]*).*/\2/" <<<"$2"; }

# ------------------------------------------------------------ register test
bench_register() {
    local csv="${REG_CSV:-$OUTDIR/users.csv}"
    [[ -s "$csv" ]] || { echo SEQUENTIAL; seq -f 'bu%07g' 1 "$USERS"; } > "$csv"
    local best=0 best_line="" first_fail=0 r
    for r in $REG_RATES; do
        local m=$(( r * DURATION ))
        local dir="$OUTDIR/register-r$r"
        local to=$(( DURATION * 3 + 30 ))
        EXTRA_PIDS="" run_sipp "$dir" "$m" -- \
            "$THOST:$TPORT" -sf "$REG_SCENARIO" -inf "$csv" -i "$LOCAL_IP" -p "$REG_PORT" \
            -t "$TRANSPORT" -r "$r" -m "$m" -timeout "${to}s" -max_socket 4096 -buff_size "$SIPP_BUF" \
            -default_behaviors all,-bye
        local res="$STEP_RES" a f
        a="$(kv achieved "$res")"; f="$(kv failed "$res")"
        local sat=0; awk -v a="$a" -v r="$r" -v m="$MIN_ACHIEVED" 'BEGIN{exit !(a < r*m)}' && sat=1
        echo "step test=register target_rate=$r saturated=$( (( sat )) && echo yes || echo no) $res cmd=\"$(cat "$dir/cmd.txt")\""
        if (( f == 0 && sat == 0 )); then
            if awk -v a="$a" -v b="$best" 'BEGIN{exit !(a>b)}'; then best="$a"; best_line="$res target_rate=$r"; fi
        elif (( f > 0 )); then
            first_fail="$f"
        fi
        if [[ "$STOP_ON_FAIL" == 1 ]]; then
            (( f > 0 || sat == 1 )) && break
        fi
    done
    echo "register_rate=$best failed=$first_fail cpu_us_per_op=$(kv target_cpu_us_per_op "$best_line") transport=$TRANSPORT duration=${DURATION}s | best_step: $best_line"
}

# ---------------------------------------------------------------- call test
UAS_PID=""
start_uas() { # dir
    mkdir -p "$1"
    ( cd "$1" && exec setsid "${NICE_CMD[@]}" "$SIPP" -sf "$SC/uas.xml" -i "$LOCAL_IP" -p "$UAS_PORT" -t "$TRANSPORT" -buff_size "$SIPP_BUF" \
          -nostdin -trace_stat -stf uas_stat.csv -fd 1 -trace_err >uas_screen.log 2>&1 ) &
    UAS_PID=$!
    prioritise "$UAS_PID" >/dev/null
    sleep 0.5
    if ! kill -0 "$UAS_PID" 2>/dev/null; then log "UAS failed to start, see $1/uas_screen.log"; return 1; fi
    ( cd "$1" && "$SIPP" "$THOST:$TPORT" -sf "$UAS_REG_SCENARIO" -key callee "$CALLEE" "${UAS_REG_ARGS_A[@]}" \
          -key contact_hp "$LOCAL_IP:$UAS_PORT" -i "$LOCAL_IP" -p "$REG_PORT" -t "$TRANSPORT" -m 1 \
          -timeout 10s -nostdin >reg_uas.log 2>&1 ) || { log "callee REGISTER failed, see $1/reg_uas.log"; return 1; }
}
stop_uas() { # dir -> prints uas failed count
    [[ -n "$UAS_PID" ]] || { echo 0; return; }
    kill -USR1 "$UAS_PID" 2>/dev/null   # sipp: soft quit (finish calls, dump stats)
    local i
    for i in $(seq 1 100); do kill -0 "$UAS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$UAS_PID" 2>/dev/null && { kill -TERM "$UAS_PID" 2>/dev/null; sleep 0.5; }
    kill -0 "$UAS_PID" 2>/dev/null && kill -KILL "$UAS_PID" 2>/dev/null
    wait "$UAS_PID" 2>/dev/null
    UAS_PID=""
    local f; f="$(stat_col "$1/uas_stat.csv" 'FailedCall(C)' 2>/dev/null)"
    echo "${f:-0}"
}
trap '[[ -n "$UAS_PID" ]] && kill "$UAS_PID" 2>/dev/null' EXIT

bench_call() {
    local best=0 best_line="" first_fail=0 r
    for r in $CALL_RATES; do
        local m=$(( r * DURATION ))
        local dir="$OUTDIR/call-r$r"
        local to=$(( DURATION * 3 + 30 + HOLD_MS / 1000 ))
        start_uas "$dir" || { echo "call_rate=0 failed=-1 (UAS/registration setup failed)"; return; }
        EXTRA_PIDS="$UAS_PID" run_sipp "$dir" "$m" -- \
            "$THOST:$TPORT" -sf "$UAC_SCENARIO" -s "$CALLEE" "${UAC_ARGS_A[@]}" -i "$LOCAL_IP" -p "$UAC_PORT" \
            -t "$TRANSPORT" -d "$HOLD_MS" -r "$r" -m "$m" -timeout "${to}s" -max_socket 4096 -buff_size "$SIPP_BUF"
        local res="$STEP_RES" uasf a f
        uasf="$(stop_uas "$dir")"
        a="$(kv achieved "$res")"; f="$(kv failed "$res")"
        f=$(( f + uasf ))
        res="$(sed -E "s/(^| )failed=[0-9]+/\1failed=$f/" <<<"$res") uas_failed=$uasf"
        local sat=0; awk -v a="$a" -v r="$r" -v m="$MIN_ACHIEVED" 'BEGIN{exit !(a < r*m)}' && sat=1
        echo "step test=call target_rate=$r saturated=$( (( sat )) && echo yes || echo no) $res cmd=\"$(cat "$dir/cmd.txt")\""
        if (( f == 0 && sat == 0 )); then
            if awk -v a="$a" -v b="$best" 'BEGIN{exit !(a>b)}'; then best="$a"; best_line="$res target_rate=$r"; fi
        elif (( f > 0 )); then
            first_fail="$f"
        fi
        if [[ "$STOP_ON_FAIL" == 1 ]]; then
            (( f > 0 || sat == 1 )) && break
        fi
    done
    echo "call_rate=$best failed=$first_fail cpu_us_per_op=$(kv target_cpu_us_per_op "$best_line") transport=$TRANSPORT hold_ms=$HOLD_MS duration=${DURATION}s | best_step: $best_line"
}

exec > >(tee -a "$OUTDIR/summary.txt")
bench_latency() {
    (( PROBE_N > 0 )) || return 0
    ( exec setsid "${NICE_CMD[@]}" python3 "$HERE/latency_probe.py" "$THOST:$TPORT" --n "$PROBE_N" "${PROBE_ARGS_A[@]}" >"$OUTDIR/latency.txt" 2>&1 ) &
    local pp=$!; prioritise "$pp" >/dev/null; wait "$pp"
    cat "$OUTDIR/latency.txt"
}
log "# bench target=$TARGET tests=[$TESTS] transport=$TRANSPORT duration=${DURATION}s outdir=$OUTDIR"
TP="$(target_pids)"
log "# target pids: $TP"
if [[ -n "$BENCH_NICE" && -n "$TP" ]]; then
    agl=""; for p in $TP; do a="$(prioritise "$p")"; [[ "$a" == yes ]] && agl+="$p "; done
    log "# reniced target threads to $BENCH_NICE; autogroup nice set for session leaders: [${agl}] (sipp: same)"
    [[ -z "$agl" ]] && log "# WARNING: target is not a session leader -> its autogroup keeps nice 0; start it with setsid for comparable numbers"
fi
log "# background host busy before start: $(bg_busy)%"
# settle TEST: wait SETTLE_S idle seconds, report the target's CPU meanwhile
settle() {
    (( ${SETTLE_S:-36} > 0 )) || return 0
    local c0 c1; c0="$(cpu_ticks $TP)"
    sleep "${SETTLE_S:-36}"
    c1="$(cpu_ticks $TP)"
    log "settle before=$1 idle_s=${SETTLE_S:-36} target_cpu_s=$(awk -v a="$c0" -v b="$c1" -v k="$CLK_TCK" 'BEGIN{printf "%.2f", (b-a)/k}')"
}
first_test=1
for t in $TESTS; do
    # latency is one request at a time: deferred work does not skew it
    (( first_test )) || [[ "$t" == latency ]] || settle "$t"
    first_test=0
    case "$t" in
        register) bench_register ;;
        call)     bench_call ;;
        latency)  bench_latency ;;
        *) log "unknown test $t" ;;
    esac
done
