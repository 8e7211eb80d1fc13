#!/usr/bin/env bash
# Start the anchor Kamailio (registrar + stateful proxy) on 127.0.0.1:5060
# UDP+TCP and print its main PID on stdout.
#
#   run-kamailio.sh            start (fails if our pidfile points to a live kamailio)
#   run-kamailio.sh stop       stop the instance recorded in our pidfile (by PID only)
#
# Env knobs:
#   KAM_CHILDREN   UDP worker processes per socket (default 4; -n)
#   KAM_SHM_MB     shared memory MB (default 1024; -m). 256 is NOT enough for
#                  100k AoRs (~120 MB) + ~1000 CPS of tm transactions in wait state
#   KAM_PKG_MB     private memory MB per process (default 32; -M)
#   KAM_WORKDIR    scratch/work dir (default /tmp/kam)
#   KAM_CFG        config (default: kamailio.cfg next to this script)
#   KAM_DEFINES    extra cfg defines, space-separated, each passed as -A
#                  (e.g. 'WITH_AUTH DBURL="text:///tmp/db"')
#   KAM_PORT       SIP port (default 5060): the cfg is copied to the work dir
#                  with its 127.0.0.1:5060 listen/alias lines rewritten
#   KAM_DEBUG      if set, overrides log level (e.g. 3) via -A/-d is not used;
#                  edit debug= in cfg or use `kamcmd cfg.set_now_int core debug 3`
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${KAM_WORKDIR:-/tmp/kam}"
CFG="${KAM_CFG:-$HERE/kamailio.cfg}"
PIDFILE="$WORK/kamailio.pid"
LOG="$WORK/kamailio.log"
CHILDREN="${KAM_CHILDREN:-4}"
SHM="${KAM_SHM_MB:-1024}"
PKG="${KAM_PKG_MB:-32}"

mkdir -p "$WORK"

is_ours_running() {
    [[ -s "$PIDFILE" ]] || return 1
    local pid; pid="$(cat "$PIDFILE")"
    [[ -d "/proc/$pid" ]] && grep -q kamailio "/proc/$pid/comm" 2>/dev/null
}

if [[ "${1:-start}" == "stop" ]]; then
    if is_ours_running; then
        pid="$(cat "$PIDFILE")"
        kill -TERM "$pid"
        for _ in $(seq 1 50); do [[ -d "/proc/$pid" ]] || break; sleep 0.1; done
        if [[ -d "/proc/$pid" ]]; then kill -KILL "$pid" || true; fi
        echo "stopped kamailio pid $pid" >&2
    else
        echo "no kamailio from $PIDFILE running" >&2
    fi
    rm -f "$PIDFILE"
    exit 0
fi

if is_ours_running; then
    echo "kamailio already running (pid $(cat "$PIDFILE")); run '$0 stop' first" >&2
    exit 1
fi
rm -f "$PIDFILE" "$WORK/kamailio_ctl"

if [[ -n "${KAM_PORT:-}" && "${KAM_PORT}" != 5060 ]]; then
    sed "s/127\.0\.0\.1:5060/127.0.0.1:$KAM_PORT/g; s/localhost:5060/localhost:$KAM_PORT/g" "$CFG" > "$WORK/kamailio-port.cfg"
    CFG="$WORK/kamailio-port.cfg"
fi

# syntax check first
CTLDEF="CTL_SOCK=\"unix:$WORK/kamailio_ctl\""
DEFS=(-A "$CTLDEF")
read -r -a _defs <<<"${KAM_DEFINES:-}"
for d in "${_defs[@]}"; do DEFS+=(-A "$d"); done
kamailio -c -f "$CFG" "${DEFS[@]}" >"$WORK/kamailio.check.log" 2>&1 || {
    cat "$WORK/kamailio.check.log" >&2; exit 1; }

ulimit -n 65536 2>/dev/null || true

# -DD: do not daemonize the creator (so $! is the main pid), still fork workers
# -E : log to stderr (there is no syslogd here) -> $LOG
# setsid: own session => own scheduler autogroup (see bench.sh BENCH_NICE)
setsid kamailio -f "$CFG" "${DEFS[@]}" -P "$PIDFILE" -w "$WORK" -m "$SHM" -M "$PKG" \
      -n "$CHILDREN" -DD -E </dev/null >>"$LOG" 2>&1 &
KPID=$!

# wait until it answers on the ctl socket (or dies)
for _ in $(seq 1 100); do
    if ! kill -0 "$KPID" 2>/dev/null; then
        echo "kamailio exited during startup; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1
    fi
    if [[ -S "$WORK/kamailio_ctl" ]] && kamcmd -s "unix:$WORK/kamailio_ctl" core.version >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
echo "$KPID" > "$PIDFILE"
echo "$KPID"
