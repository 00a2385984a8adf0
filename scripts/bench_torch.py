"""PyTorch eager side of `make bench`: the same work as `promptir bench`, on the repository's
reference models (scripts/reference/<arch>_ref.py, each the official forward op for op and
checked equal to it), with the same libtorch, and the same JSON-lines output schema.

    .venv/bin/python scripts/bench_torch.py --config paper --size 64,128 --mode train,infer --json

Two baselines: `--optimizer default` is torch.optim.AdamW as a user writes it (plain eager),
`--optimizer fused` the modern one, AdamW(fused=True), with `--precision bf16|fp16` under
torch.autocast (and a GradScaler for fp16), the loss computed in fp32 on the upcast output as
the Rust side does.

Several rows run each in a fresh child process, since peak RSS (VmHWM) and the CUDA caching
allocator's reservation are process-lifetime peaks.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))

LR = 2e-4  # same as the Rust side; it does not change a step's cost


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper", help="paper or tiny (see --model-json for others)")
    ap.add_argument("--model-json", default=None,
                    help="a model config as JSON (the `model` field of a `promptir bench --json` row)")
    ap.add_argument("--size", default="64,128,256")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--mode", default="train,infer", help="train, infer, optim, comma-separated")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--optimizer", default="default", choices=["default", "fused"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def model_config(args):
    from promptir_ref import PAPER, TINY
    if args.model_json:
        return json.loads(args.model_json)
    if args.config not in ("paper", "tiny"):
        sys.exit(f"--config {args.config!r}: give paper, tiny, or the model with --model-json")
    return dict(PAPER if args.config == "paper" else TINY)


def build_net(cfg):
    """The reference network of `cfg["arch"]` (PromptIR when absent, as in the Rust config)."""
    cfg = dict(cfg)
    arch = cfg.pop("arch", "promptir")
    if arch == "promptir":
        from promptir_ref import PromptIR
        return PromptIR(cfg)
    if arch == "restormer":
        from restormer_ref import Restormer
        return Restormer(cfg)
    if arch == "nafnet":
        from nafnet_ref import NAFNet
        return NAFNet(cfg)
    if arch == "adair":
        from adair_ref import AdaIR
        return AdaIR(cfg)
    if arch == "moce_ir":
        from moce_ir_ref import MoCEIR  # in train mode it draws its routing noise, as upstream
        return MoCEIR(cfg)
    sys.exit(f"bench_torch.py: no reference network for arch {arch!r}")


def proc_status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def minor_faults():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def cpu_ms():
    total = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e6


def run_row(args, mode, size):
    import torch

    cfg = model_config(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device in ("cuda", "gpu") else args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    cuda = device.type == "cuda"
    if cuda:
        # As the Rust side (and its `train`): the current device, cuDNN tuned once per shape.
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)

    def cuda_used_mib():
        # Same measure as the Rust side: device memory in use (context created first).
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
        free, total = torch.cuda.mem_get_info(device)
        return (total - free) / 2**20

    before = cuda_used_mib() if cuda else None
    net = build_net(cfg).to(device)
    shape = (args.batch, cfg.get("inp_channels", cfg.get("img_channel")), size, size)  # NAFNet: img_channel
    x = torch.rand(shape, device=device)
    target = torch.rand(shape, device=device)
    base_rss = proc_status_mib("VmRSS:")

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]

    def forward():
        if dtype is None:
            return net(x)
        with torch.autocast(device.type, dtype=dtype):
            return net(x)

    # torch's defaults otherwise, as a user would write it (betas, eps, weight decay 0.01).
    opt = torch.optim.AdamW(net.parameters(), lr=LR, fused=args.optimizer == "fused" or None)
    scaler = torch.amp.GradScaler(device.type) if args.precision == "fp16" else None

    def train_step():
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(forward().float(), target)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    times = []
    faults0 = cpu0 = 0
    if mode == "infer":
        net.eval()
        step, ctx = (lambda: forward()), torch.no_grad()
    elif mode == "optim":
        net.train()
        train_step()  # gradients of one step stay in place; the step alone is timed
        step, ctx = opt.step, torch.no_grad()
    else:
        net.train()
        step, ctx = train_step, torch.enable_grad()
    with ctx:
        for i in range(args.warmup + args.iters):
            if i == args.warmup:
                faults0, cpu0 = minor_faults(), cpu_ms()
            t0 = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize(device)
            if i >= args.warmup:
                times.append((time.perf_counter() - t0) * 1e3)

    faults = (minor_faults() - faults0) / args.iters
    cpu = (cpu_ms() - cpu0) / args.iters
    row = dict(
        implementation="pytorch",
        config=args.config,
        params=sum(p.numel() for p in net.parameters()),
        mode=mode,
        size=size,
        batch=args.batch,
        device=str(device),
        threads=torch.get_num_threads(),
        layout="contiguous",
        precision=args.precision,
        optimizer=args.optimizer,
        iters=args.iters,
        warmup=args.warmup,
        median_ms=statistics.median(times),
        min_ms=min(times),
        max_ms=max(times),
        images_per_s=args.batch * 1e3 / statistics.median(times),
        times_ms=times,
        cpu_ms_per_iter=cpu,
        page_faults_per_iter=faults,
        peak_rss_mib=proc_status_mib("VmHWM:"),
        base_rss_mib=base_rss,
        cuda_reserved_mib=(cuda_used_mib() - before) if cuda else None,
        model=cfg,
    )
    if cuda:
        # Not in the Rust row (tch does not expose the allocator's statistics): for reference.
        row["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["cuda_max_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return row


def main():
    args = parse_args()
    sizes = [int(s) for s in args.size.split(",")]
    modes = args.mode.split(",")
    rows = [(s, m) for s in sizes for m in modes]
    if len(rows) == 1:
        results = [run_row(args, rows[0][1], rows[0][0])]
    else:
        results = []
        for size, mode in rows:
            cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--size", str(size),
                   "--batch", str(args.batch), "--mode", mode, "--device", args.device,
                   "--precision", args.precision, "--optimizer", args.optimizer,
                   "--iters", str(args.iters), "--warmup", str(args.warmup), "--json"]
            if args.model_json:
                cmd += ["--model-json", args.model_json]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads([line for line in out.splitlines() if line.startswith("{")][-1]))
    for r in results:
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['mode']:<6} {r['size']}x{r['size']} b{r['batch']} {r['device']} thr {r['threads']}: "
                  f"median {r['median_ms']:.1f} ms, min {r['min_ms']:.1f} ms, "
                  f"{r['images_per_s']:.2f} img/s, peak RSS {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
