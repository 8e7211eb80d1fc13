#!/usr/bin/env python3
"""Tables for bench/sip.sh: one per transport x mode, medians over rounds,
DOTS/Kamailio ratio and the goal it is held to.

  sip_table.py results.tsv CPU_REG_RATE CPU_CALL_RATE
"""
import csv, statistics, sys

path, creg, ccall = sys.argv[1], sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(path), delimiter="\t"))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def med(vals):
    vals = [v for v in (num(x) for x in vals) if v is not None]
    return statistics.median(vals) if vals else None

def fmt(v, unit=""):
    if v is None:
        return "–"
    return ("%.0f" % v if abs(v) >= 100 else "%.1f" % v) + unit

# (column, label, goal on the ratio: ("ge", x) / ("le", x) / None)
METRICS = [
    ("reg_max", "max REGISTER/s, 0 failed", ("ge", 1.2)),
    ("call_max", "max calls/s, 0 failed", ("ge", 1.2)),
    ("cpu_reg_us", "CPU µs per REGISTER at %s/s" % creg, ("le", 0.8)),
    ("cpu_call_us", "CPU µs per call at %s/s" % ccall, ("le", 0.8)),
    ("reg_p50", "REGISTER latency p50 µs", None),
    ("reg_p99", "REGISTER latency p99 µs", None),
    ("inv_p50", "INVITE→200 latency p50 µs", None),
    ("inv_p99", "INVITE→200 latency p99 µs", None),
    ("bye_p50", "BYE→200 latency p50 µs", None),
    ("bye_p99", "BYE→200 latency p99 µs", None),
    ("pss_mib", "memory at end (PSS sum) MiB", None),
]
TNAME = {"u1": "UDP", "t1": "TCP"}

keys = []
for r in rows:
    k = (r["transport"], r["mode"])
    if k not in keys:
        keys.append(k)
for tr, mode in keys:
    sel = [r for r in rows if r["transport"] == tr and r["mode"] == mode]
    kam = [r for r in sel if r["sut"] == "kamailio"]
    dots = [r for r in sel if r["sut"] == "dots"]
    print("\n### %s, %s (%d round%s)\n" % (TNAME.get(tr, tr), "digest auth" if mode == "digest" else "no auth",
                                         len(dots), "" if len(dots) == 1 else "s"))
    print("| metric | Kamailio | DOTS | DOTS/Kamailio | goal | per round K / D |")
    print("|---|---:|---:|---:|---|---|")
    for col, label, goal in METRICS:
        k, d = med(r[col] for r in kam), med(r[col] for r in dots)
        ratio = d / k if (k and d is not None) else None
        g = ""
        if goal and ratio is not None:
            ok = ratio >= goal[1] if goal[0] == "ge" else ratio <= goal[1]
            g = "%s %s× %s" % ("≥" if goal[0] == "ge" else "≤", goal[1], "met" if ok else "not met")
        elif goal:
            g = "%s %s×" % ("≥" if goal[0] == "ge" else "≤", goal[1])
        per = ", ".join("%s / %s" % (a[col], b[col]) for a, b in zip(kam, dots))
        print("| %s | %s | %s | %s | %s | %s |" % (label, fmt(k), fmt(d),
                                                   "–" if ratio is None else "%.2f" % ratio, g, per))
    bg = ", ".join("%s %s" % (r["sut"][0].upper(), r["bg_busy_med_max"]) for r in sel)
    print("\nhost busy % before each step (median/max per run, K = Kamailio, D = DOTS): " + bg)
