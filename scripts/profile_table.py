"""Sums a libtorch profiler trace (`promptir bench --profile FILE`, or torch.profiler's
`export_chrome_trace`) by op: self time per op (its time minus the ops it called, on the same
thread), per timed iteration with --iters, most expensive first, as a Markdown table. A CUDA
trace gets a second table: GPU time per kernel (what the CPU-side table shows is launch cost).

    scripts/profile_table.py TRACE [--iters N] [--top K] [--shapes OP] [--json]

--shapes OP breaks one op down by its input shapes and strides instead (e.g. which convolutions
take the time: --shapes aten::convolution_backward). --json prints {"total_ms": ..., "ops": [...]}.
Standard library only.
"""

import argparse
import collections
import json
import sys


def self_times(events, shapes_of=None):
    """{key: [self_us, calls]}, key = op name, or (dims, strides) of `shapes_of`'s events."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation"):
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out = collections.defaultdict(lambda: [0.0, 0])
    for evs in by_thread.values():
        # Parents start first and, at equal starts, last longest; a stack of open ops then gives
        # each op's direct parent.
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack, child = [], collections.Counter()
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                child[id(stack[-1])] += e["dur"]
            stack.append(e)
        for e in evs:
            if shapes_of is None:
                key = e["name"]
            elif e["name"] == shapes_of:
                args = e.get("args", {})
                key = f"{args.get('Input Dims')} strides {args.get('Input Strides')}"
            else:
                continue
            out[key][0] += e["dur"] - child[id(e)]
            out[key][1] += 1
    return out


def kernel_times(events):
    """{kernel name: [device us, launches]} of a CUDA trace (empty on CPU)."""
    out = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            out[e["name"]][0] += e["dur"]
            out[e["name"]][1] += 1
    return out


def summarise(totals, n, top):
    total_ms = sum(t for t, _ in totals.values()) / 1e3 / n
    rows = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return total_ms, [dict(key=k, self_ms=t / 1e3 / n, calls=c / n) for k, (t, c) in rows]


def markdown(title, what, total_ms, ops, n):
    print(f"{title}: {total_ms:.1f} ms per iteration ({n} iteration(s))\n")
    print(f"| {what} | ms | share | calls |\n|---|---:|---:|---:|")
    for o in ops:
        print(f"| {o['key']} | {o['self_ms']:.2f} | {100 * o['self_ms'] / total_ms:.1f}% | {o['calls']:g} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--iters", type=int, default=1, help="timed iterations in the trace (bench --iters)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--shapes", metavar="OP")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        with open(args.trace) as f:
            events = json.load(f)["traceEvents"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"{args.trace}: not a profiler trace ({e}); write one with promptir bench --profile")
    totals = self_times(events, args.shapes)
    if not totals:
        sys.exit(f"{args.trace}: no CPU ops" + (f" named {args.shapes}" if args.shapes else ""))
    n = max(args.iters, 1)
    total_ms, ops = summarise(totals, n, args.top)
    kernels = kernel_times(events) if args.shapes is None else {}
    gpu_ms, gpu_ops = summarise(kernels, n, args.top) if kernels else (0.0, [])
    if args.json:
        print(json.dumps(dict(total_ms=total_ms, iters=n, ops=ops, gpu_total_ms=gpu_ms, kernels=gpu_ops)))
        return
    markdown("self time of CPU ops", args.shapes or "op", total_ms, ops, n)
    if gpu_ops:
        print()
        markdown("GPU time of kernels", "kernel", gpu_ms, gpu_ops, n)


if __name__ == "__main__":
    main()
