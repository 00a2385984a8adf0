"""Prints the Rust vs PyTorch table of `scripts/bench.sh` from its raw JSON-lines file.

Each line is {"rep": r, "row": <a `promptir bench --json` or `bench_torch.py --json` row>}.
Per (mode, size, batch, device): median and min over every timed iteration of every repetition,
the Rust/PyTorch ratio of those medians and of the mins, the range of the per-repetition ratios
of medians (the noise), images/s, and peak RSS (max over repetitions) with its ratio.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
from collections import defaultdict
from datetime import datetime, timezone


def machine():
    model, cores = platform.processor() or "?", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                model = v.strip()
    except OSError:
        pass
    return f"{model}, {cores} cores"


def table(lines, load=None):
    groups = defaultdict(lambda: {"rust": [], "pytorch": []})
    for entry in lines:
        r = entry["row"]
        key = (r["mode"], r["size"], r["batch"], r["device"])
        groups[key][r["implementation"]].append((entry["rep"], r))
    first = lines[0]["row"]
    out = [
        f"machine: {machine()}; threads: {first['threads']}; config: {first['config']} "
        f"({first['params']:,} parameters); date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]
    if load:
        out.append(f"load average (1/5/15 min) before: {load[0]}; after: {load[1]}")
    out += [
        "",
        "| mode | size | batch | device | Rust median ms (min) | PyTorch median ms (min) "
        "| ratio median (min) [per-rep range] | Rust img/s | Rust peak RSS MiB | PyTorch peak RSS MiB "
        "| RSS ratio | Rust layout |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (mode, size, batch, device), g in sorted(groups.items(), key=lambda kv: (kv[0][0] != "infer", kv[0][1:])):
        if not g["rust"] or not g["pytorch"]:
            continue
        t = {k: [x for _, r in g[k] for x in r["times_ms"]] for k in g}
        med = {k: statistics.median(v) for k, v in t.items()}
        mn = {k: min(v) for k, v in t.items()}
        rss = {k: max(r["peak_rss_mib"] for _, r in g[k]) for k in g}
        by_rep = {k: {rep: r["median_ms"] for rep, r in g[k]} for k in g}
        reps = sorted(set(by_rep["rust"]) & set(by_rep["pytorch"]))
        per_rep = [by_rep["rust"][i] / by_rep["pytorch"][i] for i in reps]
        layout = ",".join(sorted({r.get("layout", "?") for _, r in g["rust"]}))
        out.append(
            f"| {mode} | {size}x{size} | {batch} | {device} "
            f"| {med['rust']:.0f} ({mn['rust']:.0f}) | {med['pytorch']:.0f} ({mn['pytorch']:.0f}) "
            f"| **{med['rust'] / med['pytorch']:.2f}** ({mn['rust'] / mn['pytorch']:.2f}) "
            f"[{min(per_rep):.2f}-{max(per_rep):.2f}] "
            f"| {batch * 1e3 / med['rust']:.2f} | {rss['rust']:.0f} | {rss['pytorch']:.0f} "
            f"| {rss['rust'] / rss['pytorch']:.2f} | {layout} |"
        )
    n = {len(g["rust"]) for g in groups.values()}
    out.append("")
    out.append(f"{max(n)} repetition(s) per row, each a fresh process per implementation; "
               f"{first['iters']} timed iterations after {first['warmup']} warm-up each.")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl")
    ap.add_argument("--load", nargs=2, default=None, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    with open(args.jsonl) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines:
        raise SystemExit(f"{args.jsonl}: no rows")
    print(table(lines, args.load))


if __name__ == "__main__":
    main()
