#!/usr/bin/env python3
"""Side-by-side table of the overlay benchmark and the OpenDHT harness.

Reads the `phase=... k=v` lines of runs named <impl>_n<N>_s<seed>.txt (impl: odht
or dots, as bench/overlay.sh writes them) and prints, per N and phase, the median
over seeds of success and latency for both, and the ratios DOTS/OpenDHT
(below 1 = DOTS faster), each ratio the median of the per-seed ratios of runs made
back to back. Gets are compared time for time: "first" (`p50_ms`..: OpenDHT's first
value delivered, DOTS `lookup(fresh = false)`) and "done" (`done_p50_ms`..: OpenDHT's
whole search, DOTS `lookup(fresh = true)`). "ok" is `ok_ratio`, after the kill
`survival` (DOTS: found by the fresh DHT lookup); "DOTS first ok" is DOTS
`first_ok_ratio`, the local answer's success.

usage: compare.py results-dir
"""
import os
import re
import statistics
import sys

PHASES = ["put", "get", "get_killed", "get_killed2"]
NAME = re.compile(r"^(odht|dots)_n(\d+)_s(\d+)\.txt$")


def parse(path):
    out = {}
    for line in open(path):
        if line.startswith("phase="):
            d = dict(t.split("=", 1) for t in line.split() if "=" in t)
            out[d["phase"]] = d
    return out


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return float("nan")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def f(x, digits=2):
    return "nan" if x != x else ("%.*f" % (digits, x))


def main():
    d = sys.argv[1]
    runs = {}
    for name in sorted(os.listdir(d)):
        m = NAME.match(name)
        if m:
            runs.setdefault((int(m.group(2)), int(m.group(3))), {})[m.group(1)] = parse(os.path.join(d, name))
    ns = sorted({n for n, _ in runs})
    print("| N | phase | seeds | OpenDHT ok | DOTS ok | DOTS first ok | OpenDHT first p50 / p95 / p99 ms "
          "| DOTS first p50 / p95 / p99 ms | DOTS/OpenDHT first p50 / p95 / p99 "
          "| OpenDHT done p50 / p95 / p99 ms | DOTS done p50 / p95 / p99 ms | DOTS/OpenDHT done p50 / p95 / p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in ns:
        pairs = [runs[k] for k in sorted(runs) if k[0] == n and "odht" in runs[k] and "dots" in runs[k]]
        for ph in PHASES:
            rows = [(p["odht"].get(ph), p["dots"].get(ph)) for p in pairs]
            rows = [(o, s) for o, s in rows if o and s]
            if not rows:
                continue
            okk = "survival" if ph.startswith("get_killed") else "ok_ratio"
            o_ok = med([num(o, okk) for o, _ in rows])
            s_ok = med([num(s, okk) for _, s in rows])
            s_first_ok = med([num(s, "first_ok_ratio") for _, s in rows])
            get = ph != "put"

            def side(key):  # medians of OpenDHT, of DOTS, of the per-seed ratios DOTS/OpenDHT
                o = [med([num(o, key % q) for o, _ in rows]) for q in (50, 95, 99)]
                s = [med([num(s, key % q) for _, s in rows]) for q in (50, 95, 99)]
                r = [med([num(s, key % q) / num(o, key % q) for o, s in rows]) for q in (50, 95, 99)]
                return [" / ".join(f(x) for x in xs) for xs in (o, s, r)]

            first = side("p%d_ms")  # put: until the put returned; get: first value
            done = side("done_p%d_ms") if get else ["-"] * 3
            print("| %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                n, ph, len(rows), f(o_ok, 4), f(s_ok, 4), f(s_first_ok, 4) if get else "-", *first, *done))
    print()
    print("| N | phase | OpenDHT CPU % (of 200) | DOTS CPU % | OpenDHT RSS MB/node | DOTS RSS MB/node "
          "| OpenDHT ops/s | DOTS ops/s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in ns:
        pairs = [runs[k] for k in sorted(runs) if k[0] == n and "odht" in runs[k] and "dots" in runs[k]]
        for ph in ["settle"] + PHASES:
            rows = [(p["odht"].get(ph), p["dots"].get(ph)) for p in pairs]
            rows = [(o, s) for o, s in rows if o and s]
            if not rows:
                continue
            print("| %d | %s | %s | %s | %s | %s | %s | %s |" % (
                n, ph, f(med([num(o, "nodes_cpu_pct") for o, _ in rows]), 1),
                f(med([num(s, "nodes_cpu_pct") for _, s in rows]), 1),
                f(med([num(o, "rss_mb_node_avg") for o, _ in rows]), 1),
                f(med([num(s, "rss_mb_node_avg") for _, s in rows]), 1),
                f(med([num(o, "ops_per_s") for o, _ in rows]), 0),
                f(med([num(s, "ops_per_s") for _, s in rows]), 0)))


if __name__ == "__main__":
    main()
