#!/usr/bin/env python3
"""Gathers the benchmarks' --json records of several runs into docs/benchmarks.md
and a chart of mpx's advantage over each scenario's main peer.

    python3 scripts/bench_report.py RESULTS_DIR OUT_MD OUT_SVG

RESULTS_DIR holds <benchmark>.<run>.json files, each a list of records as
bench/bench_support.hpp writes them: benchmark, name, unit, better, mpx,
peers {peer: value}, ratios {peer: mpx's advantage, > 1 = mpx better}, note.
Every figure in the table is the median over the runs, with [min-max]. The
chart (gnuplot, when installed) shows the median advantage over the first
peer of each scenario on a log scale.
"""
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import OrderedDict


def fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-2:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def spread(values):
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(values))}-{fmt(max(values))}]"


def runs_label(bench, n):
    return f"{bench} ({n} run{'' if n == 1 else 's'})"


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {cpu}, Linux {platform.release()}"


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    results, out_md, out_svg = sys.argv[1:]
    # (benchmark, scenario) -> {"unit", "better", "note", "mpx": [...], "peers": {peer: [...]}, "ratios": {...}}
    rows = OrderedDict()
    runs = {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        bench = os.path.basename(path).split(".")[0]
        runs.setdefault(bench, 0)
        runs[bench] += 1
        with open(path) as f:
            records = json.load(f)
        for r in records:
            key = (r.get("benchmark", bench), r["name"])
            row = rows.setdefault(key, {"unit": r["unit"], "better": r.get("better", "higher"),
                                        "note": r.get("note", ""), "mpx": [], "peers": OrderedDict(),
                                        "ratios": OrderedDict()})
            row["mpx"].append(float(r["mpx"]))
            for peer, value in r.get("peers", {}).items():
                row["peers"].setdefault(peer, []).append(float(value))
            for peer, value in r.get("ratios", {}).items():
                row["ratios"].setdefault(peer, []).append(float(value))
    if not rows:
        sys.exit(f"bench_report: no records in {results}")

    date = datetime.date.today().isoformat()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `bash scripts/bench.sh` on {date}, on {machine()}.",
        "Every figure is the **median over the runs** of that benchmark, with the range [min-max] across runs;",
        "within one run each benchmark already takes its own median or best of several repetitions (see the",
        "comment at the top of `bench/<benchmark>.cpp`). Peers are measured in the same run as mpx: Python's",
        "`multiprocessing`, CAF, or the machine's bare limit (`bare_*`, `memcpy_*`).",
        "**Advantage** is how many times better mpx is than the peer (> 1: mpx better), whatever the unit's",
        "direction. Reproduce with `bash scripts/bench.sh` on a quiet machine (`BENCH_RUNS=3` by default).",
        "",
        "| benchmark | scenario | unit | better | mpx | peer | peer value | advantage | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    chart = []  # (label, median advantage over the first peer)
    for (bench, name), row in rows.items():
        n = len(row["mpx"])
        peers = list(row["peers"].items()) or [(None, [])]
        for i, (peer, values) in enumerate(peers):
            ratio = row["ratios"].get(peer, []) if peer else []
            lines.append("| {} | `{}` | {} | {} | {} | {} | {} | {} | {} |".format(
                runs_label(bench, runs.get(bench, n)) if i == 0 else "", name if i == 0 else "",
                row["unit"] if i == 0 else "", row["better"] if i == 0 else "",
                spread(row["mpx"]) if i == 0 else "", peer or "-", spread(values) if values else "-",
                f"**{spread(ratio)}x**" if ratio else "-", row["note"].replace("|", "/") if i == 0 else ""))
            if i == 0 and ratio:
                chart.append((f"{name} vs {peer}", statistics.median(ratio)))
    lines += ["", f"![mpx's advantage over each scenario's first peer](benchmarks.svg)", ""]
    with open(out_md, "w") as f:
        f.write("\n".join(lines))
    print(f"bench_report: wrote {out_md} ({len(rows)} scenarios)")

    if not chart:
        return
    data = out_svg + ".dat"
    with open(data, "w") as f:
        for i, (label, ratio) in enumerate(chart):
            f.write(f"{len(chart) - 1 - i} {ratio:.6g}\n")  # the first scenario at the top
    lo = min(0.1, min(r for _, r in chart) / 2)
    hi = max(10.0, max(r for _, r in chart) * 2)
    ytics = ", ".join(f'"{label}" {len(chart) - 1 - i}' for i, (label, _) in enumerate(chart))
    script = f"""
set terminal svg size 1000,{120 + 22 * len(chart)} dynamic font "sans,11" noenhanced
set output "{out_svg}"
set title "mpx's advantage over each scenario's first peer (x times better; median of runs)"
set logscale x 10
set xrange [{lo}:{hi}]
set yrange [-1:{len(chart)}]
set ytics ({ytics}) scale 0 font "sans,9"
set grid xtics
unset key
set style fill solid 0.6
set arrow from 1, graph 0 to 1, graph 1 nohead lc rgb "red" dt 2
plot "{data}" using ($2 >= 1 ? $2 : NaN):1:(1):2:($1-0.35):($1+0.35) with boxxyerrorbars lc rgb "#2b7bba", \\
     "{data}" using ($2 < 1 ? $2 : NaN):1:2:(1):($1-0.35):($1+0.35) with boxxyerrorbars lc rgb "#d95f02"
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print(f"bench_report: wrote {out_svg}")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bench_report: no chart ({e})", file=sys.stderr)
    finally:
        os.unlink(data)


if __name__ == "__main__":
    main()
