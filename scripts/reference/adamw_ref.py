"""PyTorch side of tests/optim.rs: torch.optim.AdamW and clip_grad_norm_ on a small fixture.

    python scripts/reference/adamw_ref.py OUT.safetensors

Tensors: `param0.<name>` (initial values); per step k, `grad.<k>.<name>` (absent where the
parameter gets no gradient that step) and `param.<k>.<name>` (values after step k); the final
optimizer state `exp_avg.<name>`, `exp_avg_sq.<name>`, `step.<name>`; for clipping, the grads
`clip.grad.<name>`, then per max_norm i the returned norm `clip.<i>.norm` and the clipped grads
`clip.<i>.grad.<name>`. For the fused kernel, a 10-step run with gradient clipping each step
(`clip_grad_norm_(max_norm=FUSED_CLIP)`) from `param0`: grads `fgrad.<k>.<name>` and the values
after step k with `AdamW(fused=True)` (`fused.<k>.<name>`) and with the single-tensor loop
(`single.<k>.<name>`). Metadata `config` (JSON): per-step lrs, betas, eps, weight_decay, clip
max_norms, fused_lrs, fused_clip.
"""
import json
import sys

import torch
from safetensors.torch import save_file

SHAPES = {
    "enc.weight": (4, 3, 3, 3),
    "enc.bias": (4,),
    "head.scale": (1,),
    "prompt": (1, 2, 5, 5),
}
LRS = [1e-3, 2.5e-3, 5e-4, 3e-3, 1.5e-3]
BETAS = (0.8, 0.95)
EPS = 1e-6
WD = 0.05
# (step, name) pairs that get no gradient, so that step counts differ per parameter.
NO_GRAD = {(1, "head.scale"), (3, "head.scale"), (2, "prompt")}
MAX_NORMS = [0.5, 1e3]
FUSED_LRS = [1e-3, 2e-3, 3e-3, 2.5e-3, 2e-3, 1.5e-3, 1e-3, 8e-4, 5e-4, 2e-4]
FUSED_CLIP = 5.0


def clipped_run(params0, grads, fused):
    """The 10 steps of the fused comparison: clip, then step; the values after each step."""
    names = sorted(params0)
    params = {n: torch.nn.Parameter(params0[n].clone()) for n in names}
    opt = torch.optim.AdamW([params[n] for n in names], lr=FUSED_LRS[0], betas=BETAS, eps=EPS,
                            weight_decay=WD, fused=fused, foreach=False if not fused else None)
    out = []
    for k, lr in enumerate(FUSED_LRS):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        for n in names:
            if (k % 5, n) not in NO_GRAD:
                params[n].grad = grads[k][n].clone()
        torch.nn.utils.clip_grad_norm_([p for p in params.values() if p.grad is not None], FUSED_CLIP)
        opt.step()
        out.append({n: params[n].detach().clone() for n in names})
    return out


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    names = sorted(SHAPES)
    params = {n: torch.nn.Parameter(torch.randn(SHAPES[n])) for n in names}
    t = {f"param0.{n}": p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(
        [params[n] for n in names], lr=LRS[0], betas=BETAS, eps=EPS, weight_decay=WD
    )
    for k, lr in enumerate(LRS):
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()  # set_to_none=True
        for n in names:
            if (k, n) in NO_GRAD:
                continue
            # Grads over several magnitudes, so eps and the bias corrections matter.
            g = torch.randn(SHAPES[n]) * 10.0 ** torch.randint(-4, 2, SHAPES[n])
            params[n].grad = g
            t[f"grad.{k}.{n}"] = g.clone()
        opt.step()
        for n in names:
            t[f"param.{k}.{n}"] = params[n].detach().clone()
    for n in names:
        st = opt.state[params[n]]
        t[f"exp_avg.{n}"] = st["exp_avg"].clone()
        t[f"exp_avg_sq.{n}"] = st["exp_avg_sq"].clone()
        t[f"step.{n}"] = torch.tensor(int(st["step"].item()), dtype=torch.int64)

    grads = {n: torch.randn(SHAPES[n]) for n in names}
    for n in names:
        t[f"clip.grad.{n}"] = grads[n].clone()
    for i, max_norm in enumerate(MAX_NORMS):
        for n in names:
            params[n].grad = grads[n].clone()
        norm = torch.nn.utils.clip_grad_norm_([params[n] for n in names], max_norm)
        t[f"clip.{i}.norm"] = norm.reshape(())
        for n in names:
            t[f"clip.{i}.grad.{n}"] = params[n].grad.clone()

    params0 = {n: t[f"param0.{n}"] for n in names}
    fgrads = [{n: torch.randn(SHAPES[n]) * 10.0 ** torch.randint(-3, 2, SHAPES[n]) for n in names}
              for _ in FUSED_LRS]
    for k, g in enumerate(fgrads):
        for n in names:
            if (k % 5, n) not in NO_GRAD:
                t[f"fgrad.{k}.{n}"] = g[n].clone()
    for tag, fused in [("fused", True), ("single", False)]:
        for k, values in enumerate(clipped_run(params0, fgrads, fused)):
            for n in names:
                t[f"{tag}.{k}.{n}"] = values[n]

    config = {"lrs": LRS, "betas": BETAS, "eps": EPS, "weight_decay": WD, "max_norms": MAX_NORMS,
              "fused_lrs": FUSED_LRS, "fused_clip": FUSED_CLIP}
    save_file({k: v.contiguous() for k, v in t.items()}, out, metadata={"config": json.dumps(config)})


if __name__ == "__main__":
    main()
