"""Writes `make zoo`'s table (scripts/zoo.sh): one row per tiny network with its parameters, MACs
at 256x256, the Rust/PyTorch bench rows and the test PSNR/SSIM per degradation type.

    .venv/bin/python scripts/zoo_table.py --session results/zoo/session-... --nets promptir nafnet \
        --steps 270 --seed 42 --command "..." --output results/zoo/session-.../report/zoo.md

From the session folder it reads logs/<net>/eval_test.json (`promptir eval --format json`),
bench/<net>.jsonl (scripts/bench.sh's raw rows; their Rust rows carry the network's config and
parameter count) and train_seconds.tsv. MACs are counted with torch.utils.flop_counter's
FlopCounterMode (FLOPs / 2) over one forward of the reference network (scripts/reference/, built
by bench_torch.build_net from the Rust row's config) at 1x3x256x256: convolutions and matrix
products, attention's included; elementwise ops, norms, resampling and FFTs are not counted.
A second table gives the paper configs' parameters and MACs (`--no-paper` leaves it out). Next
to the markdown it writes the same numbers as JSON (zoo.json).
"""
import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "reference"))
from bench_table import machine, slot  # noqa: E402
from bench_torch import build_net  # noqa: E402

LABELS = {"promptir": "PromptIR", "restormer": "Restormer", "nafnet": "NAFNet", "adair": "AdaIR",
          "moce_ir": "MoCE-IR"}
# The paper config of each reference module (scripts/reference/<arch>_ref.py): attribute, label.
PAPER_CONFIGS = {"nafnet": ("SIDD", "SIDD (width 32)")}
MACS_SIZE = 256
# Networks whose forward picks experts per image: their MACs are those of the counted input's route.
ROUTED = {"moce_ir"}
SUMMARY = ("count", "psnr", "ssim", "psnr_input", "ssim_input")  # the eval file's summary fields
MODES = {"train": "training step", "infer": "inference", "optim": "AdamW step"}


def label(arch):
    return LABELS.get(arch, arch)


def count_macs(cfg, size=MACS_SIZE):
    """(MACs, parameters) of the reference network of `cfg` at 1 x C x size x size; None for an
    arch without one. On the meta device when the forward allows it (no data-dependent sizes),
    else on the CPU (AdaIR's mask size is read from a tensor)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    channels = cfg.get("inp_channels", cfg.get("img_channel", 3))
    for device in ("meta", "cpu"):
        try:
            torch.manual_seed(0)
            with torch.device(device):
                net = build_net(cfg).eval()
        except SystemExit:  # build_net: no reference network for this arch
            return None
        try:
            x = torch.rand(1, channels, size, size, device=device)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                net(x)
        except Exception:  # on meta: a data-dependent size (.item()) or an op without a meta kernel
            if device == "cpu":
                raise
            continue
        return counter.get_total_flops() // 2, sum(p.numel() for p in net.parameters())


def paper_config(arch):
    """(label, config) of the reference module's paper config, or None when there is none."""
    attr, name = PAPER_CONFIGS.get(arch, ("PAPER", "paper"))
    try:
        module = __import__(f"{arch}_ref")
    except ImportError:
        return None
    cfg = getattr(module, attr, None)
    return None if cfg is None else (name, dict(cfg, arch=arch))


def read_bench(path):
    """{(mode, size, batch, precision): {"rust"|"fused"|"eager": [(rep, row)]}} in the file's row
    order; the eager fp32 baseline belongs to every precision of its row, as in bench_table."""
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    groups, eager = {}, defaultdict(list)
    for e in lines:
        r = e["row"]
        if slot(r) == "eager":
            eager[(r["mode"], r["size"], r["batch"])].append((e["rep"], r))
        else:
            key = (r["mode"], r["size"], r["batch"], e.get("precision", r.get("precision", "fp32")))
            groups.setdefault(key, {"rust": [], "fused": [], "eager": []})[slot(r)].append((e["rep"], r))
    for (mode, size, batch, _), g in groups.items():
        g["eager"] = eager[(mode, size, batch)]
    return groups


def compare(g, k):
    """Rust against column k: medians over all timed iterations, their ratio and the range of the
    per-repetition ratios of medians."""
    if not g["rust"] or not g[k]:
        return None
    med = {s: statistics.median([t for _, r in g[s] for t in r["times_ms"]]) for s in ("rust", k)}
    reps = {s: {rep: r["median_ms"] for rep, r in g[s]} for s in ("rust", k)}
    per_rep = [reps["rust"][i] / reps[k][i] for i in sorted(set(reps["rust"]) & set(reps[k]))]
    return dict(rust_ms=med["rust"], torch_ms=med[k], ratio=med["rust"] / med[k], reps=len(per_rep),
                ratio_min=min(per_rep, default=None), ratio_max=max(per_rep, default=None))


def row_label(key):
    mode, size, batch, precision = key
    text = f"{MODES.get(mode, mode)} {size}x{size}"
    if mode != "infer" or batch != 1:
        text += f", batch {batch}"
    return text + ("" if precision == "fp32" else f", {precision}")


def ms(v):
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def ratio_text(c):
    spread = f" ({c['ratio_min']:.2f}-{c['ratio_max']:.2f})" if c["reps"] > 1 else ""
    return f"**{c['ratio']:.2f}**{spread}"


def millions(n):
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def giga(n):
    return f"{n / 1e9:.2f}G"


def load_net(session, net):
    with open(os.path.join(session, "logs", net, "eval_test.json")) as f:
        ev = {k: v for k, v in json.load(f).items() if k in SUMMARY}
    bench = read_bench(os.path.join(session, "bench", f"{net}.jsonl"))
    rust = next(r for g in bench.values() for _, r in g["rust"])
    model = rust["model"]
    macs = count_macs(model)
    rows = {}
    for key, g in bench.items():
        rows[key] = dict(eager=compare(g, "eager"), fused=compare(g, "fused"))
    return dict(network=net, label=label(net), params=rust["params"], model=model, threads=rust["threads"],
                macs=None if macs is None else macs[0], torch_params=None if macs is None else macs[1],
                bench=rows, eval=ev)


def train_seconds(session):
    path = os.path.join(session, "train_seconds.tsv")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {a: int(b) for a, b in (line.split("\t") for line in f.read().splitlines()[1:] if line)}


def markdown(nets, paper, args, seconds):
    kinds = sorted({k for n in nets for k in n["eval"]["psnr"] if k != "all"})
    keys = list(dict.fromkeys(k for n in nets for k in n["bench"]))
    threads = sorted({n["threads"] for n in nets})
    date = datetime.now(timezone.utc)
    out = [
        f"Date: {date:%Y-%m-%d %H:%M} UTC; machine: {machine()}, {'/'.join(map(str, threads))} libtorch "
        f"thread(s); command: `{args.command}`.",
        "",
    ]
    head = ["network", "parameters", f"MACs {MACS_SIZE}x{MACS_SIZE}"]
    for key in keys:
        head += [f"{row_label(key)}: Rust vs PyTorch ms", "ratio"]
    head += ["training run (s)"]
    head += [f"test PSNR / SSIM: {k}" for k in ["all"] + kinds]
    out += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def scores(summary, psnr, ssim):
        return [f"{summary[psnr][k]:.2f} / {summary[ssim][k]:.4f}" if k in summary[psnr] and k in summary[ssim]
                else "-" for k in ["all"] + kinds]

    for n in nets:
        cells = [n["label"], f"{n['params']:,}", "-" if n["macs"] is None else giga(n["macs"])]
        for key in keys:
            c = (n["bench"].get(key) or {}).get("eager")
            cells += ["-", "-"] if c is None else [f"{ms(c['rust_ms'])} vs {ms(c['torch_ms'])}", ratio_text(c)]
        cells.append(str(seconds.get(n["network"], "-")))
        cells += scores(n["eval"], "psnr", "ssim")
        out.append("| " + " | ".join(cells) + " |")
    first = nets[0]["eval"]
    blank = [""] * (len(head) - 2 - len(kinds))
    out.append("| " + " | ".join(["degraded input"] + blank + scores(first, "psnr_input", "ssim_input")) + " |")

    count = first.get("count", "?")
    out += [
        "",
        f"Each network: its tiny experiment (experiments/tiny.yaml, experiments/tiny_<arch>.yaml), "
        f"{args.steps} training steps, seed {args.seed}, on `{args.data}`; test PSNR/SSIM: `promptir eval` "
        f"of the best-validation checkpoint on the {count} test images without TTA (PSNR on the rounded "
        "8-bit output, mean over images; per type from test/types.json). training run (s): wall time of the "
        "whole `promptir train` run, validation included; degraded input: the test inputs' own scores.",
        "Rust vs PyTorch: scripts/bench.sh, fp32, median wall time over every timed iteration of every "
        "repetition, against PyTorch running the reference network in plain eager fp32 "
        "(torch.optim.AdamW); ratio: Rust / PyTorch, in brackets the range of the per-repetition ratios "
        "(with several). "
        "Ratios to PyTorch's fused AdamW, and the raw rows: zoo.json, the session's bench/.",
        f"MACs: torch.utils.flop_counter.FlopCounterMode (FLOPs / 2) over one forward of the reference "
        f"network (scripts/reference/) at 1x3x{MACS_SIZE}x{MACS_SIZE}: convolutions and matrix products, "
        "attention's included; elementwise ops, norms, resampling and FFTs are not counted.",
    ]
    routed = [n["label"] for n in nets if n["network"] in ROUTED]
    if routed:
        out.append(f"{', '.join(routed)}: MACs of the experts its eval routing picks for the counted input "
                   "(uniform noise, torch.manual_seed(0)); other images may route to experts of other sizes.")
    missing = [n["label"] for n in nets if n["macs"] is None]
    if missing:
        out.append(f"No reference network in scripts/reference/ (bench_torch.build_net) for "
                   f"{', '.join(missing)}: no MACs.")
    mismatch = [n["label"] for n in nets if n["torch_params"] not in (None, n["params"])]
    if mismatch:
        out.append(f"Parameter counts of the Rust and the reference network differ for {', '.join(mismatch)}.")
    if paper:
        out += ["", "The paper configs (not trained here), from the reference modules:", "",
                f"| network | config | parameters | MACs {MACS_SIZE}x{MACS_SIZE} |", "|---|---|---:|---:|"]
        for p in paper:
            out.append(f"| {p['label']} | {p['config']} | {p['params']:,} ({millions(p['params'])}) "
                       f"| {giga(p['macs'])} |")
    if os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(args.output)), "fig3_val_psnr.png")):
        out += ["", "Validation PSNR per epoch, one line per network (`promptir report`; its table: "
                "ablation.md):", "", "![validation PSNR per epoch](fig3_val_psnr.png)"]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--session", required=True, help="a scripts/zoo.sh session folder")
    ap.add_argument("--nets", nargs="+", required=True, help="arch names, in table order")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--data", default="promptir synth", help="how the data set was made")
    ap.add_argument("--command", default="scripts/zoo.sh", help="the command line for the header")
    ap.add_argument("--no-paper", action="store_true", help="leave out the paper configs' MACs")
    ap.add_argument("--output", required=True, help="zoo.md (zoo.json goes beside it)")
    args = ap.parse_args()

    nets = [load_net(args.session, n) for n in args.nets]
    paper = []
    if not args.no_paper:
        for n in args.nets:
            found = paper_config(n)
            counted = found and count_macs(found[1])
            if counted:
                paper.append(dict(network=n, label=label(n), config=found[0], macs=counted[0], params=counted[1]))
    text = markdown(nets, paper, args, train_seconds(args.session))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    seconds = train_seconds(args.session)
    record = dict(command=args.command, steps=args.steps, seed=args.seed, data=args.data, machine=machine(),
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"), macs_size=MACS_SIZE,
                  networks=[dict({k: v for k, v in n.items() if k != "bench"}, train_seconds=seconds.get(n["network"]),
                                 bench=[dict(row=row_label(k), mode=k[0], size=k[1], batch=k[2], precision=k[3], **v)
                                        for k, v in n["bench"].items()]) for n in nets],
                  paper=paper)
    with open(os.path.join(os.path.dirname(os.path.abspath(args.output)), "zoo.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    print(text, end="")


if __name__ == "__main__":
    main()
