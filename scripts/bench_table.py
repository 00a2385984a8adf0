"""Prints the Rust vs PyTorch table of `scripts/bench.sh` from its raw JSON-lines file.

Each line is {"rep": r, "precision": p, "row": <a `promptir bench --json` or `bench_torch.py
--json` row>}, p the precision of the row the line was measured for. Per (mode, size, batch,
precision, device): median and min over every timed iteration of every repetition for Rust,
PyTorch's modern baseline (autocast + fused AdamW) and PyTorch plain eager fp32; the Rust/PyTorch
ratios of those medians and of the mins, the range of the per-repetition ratios of medians (the
noise), images/s, and peak RSS (max over repetitions).
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


def slot(r):
    """Which column a row fills: rust, pytorch-fused (the modern baseline) or pytorch-eager."""
    if r["implementation"] == "rust":
        return "rust"
    return "fused" if r.get("optimizer") == "fused" else "eager"


def stats(g, k):
    times = [x for _, r in g[k] for x in r["times_ms"]]
    return statistics.median(times), min(times), {rep: r["median_ms"] for rep, r in g[k]}


def ratio_cell(g, k):
    """Rust / column k: ratio of medians (of mins) [range of per-repetition ratios]."""
    if not g["rust"] or not g[k]:
        return "-"
    (rm, rmin, rreps), (km, kmin, kreps) = stats(g, "rust"), stats(g, k)
    per_rep = [rreps[i] / kreps[i] for i in sorted(set(rreps) & set(kreps))]
    spread = f" [{min(per_rep):.2f}-{max(per_rep):.2f}]" if per_rep else ""
    return f"**{rm / km:.2f}** ({rmin / kmin:.2f}){spread}"


def time_cell(g, k):
    if not g[k]:
        return "-"
    m, mn, _ = stats(g, k)
    digits = 1 if m < 10 else 0
    return f"{m:.{digits}f} ({mn:.{digits}f})"


def table(lines, load=None):
    groups = defaultdict(lambda: {"rust": [], "fused": [], "eager": []})
    eager = defaultdict(list)  # measured once per row whatever its precision
    for entry in lines:
        r = entry["row"]
        precision = entry.get("precision", r.get("precision", "fp32"))
        if slot(r) == "eager":
            eager[(r["mode"], r["size"], r["batch"], r["device"])].append((entry["rep"], r))
        else:
            groups[(r["mode"], r["size"], r["batch"], precision, r["device"])][slot(r)].append((entry["rep"], r))
    for (mode, size, batch, _, device), g in groups.items():
        g["eager"] = eager[(mode, size, batch, device)]
    first = lines[0]["row"]
    out = [
        f"machine: {machine()}; threads: {first['threads']}; config: {first['config']} "
        f"({first['params']:,} parameters); date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    ]
    if load:
        out.append(f"load average (1/5/15 min) before: {load[0]}; after: {load[1]}")
    out += [
        "",
        "| mode | size | batch | precision | device | Rust ms median (min) "
        "| PyTorch fused AdamW (+ autocast) ms | Rust / that [per-rep] | PyTorch eager fp32 ms "
        "| Rust / that [per-rep] | Rust img/s | peak RSS MiB Rust / fused / eager |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"infer": 0, "train": 1, "optim": 2}
    for key, g in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0][1:])):
        mode, size, batch, precision, device = key
        if not g["rust"]:
            continue
        # null where the kernel has no VmHWM (some sandboxes).
        peaks = {k: [r["peak_rss_mib"] for _, r in g[k] if r["peak_rss_mib"] is not None] for k in g}
        rss = {k: (f"{max(v):.0f}" if v else "-") for k, v in peaks.items()}
        rust_median = stats(g, "rust")[0]
        out.append(
            f"| {mode} | {size}x{size} | {batch} | {precision} | {device} | {time_cell(g, 'rust')} "
            f"| {time_cell(g, 'fused')} | {ratio_cell(g, 'fused')} "
            f"| {time_cell(g, 'eager')} | {ratio_cell(g, 'eager')} "
            f"| {batch * 1e3 / rust_median:.2f} | {rss['rust']} / {rss['fused']} / {rss['eager']} |"
        )
    n = {len(g["rust"]) for g in groups.values()}
    out.append("")
    out.append(f"{max(n)} repetition(s) per row, each a fresh process per implementation; "
               f"{first['iters']} timed iterations after {first['warmup']} warm-up each. "
               "The eager column is fp32 whatever the row's precision.")
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
