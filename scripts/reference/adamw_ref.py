"""PyTorch side of tests/optim.rs: torch.optim.AdamW and clip_grad_norm_ on a small fixture.

    python scripts/reference/adamw_ref.py OUT.safetensors

Tensors: `param0.<name>` (initial values); per step k, `grad.<k>.<name>` (absent where the
parameter gets no gradient that step) and `param.<k>.<name>` (values after step k); the final
optimizer state `exp_avg.<name>`, `exp_avg_sq.<name>`, `step.<name>`; for clipping, the grads
`clip.grad.<name>`, then per max_norm i the returned norm `clip.<i>.norm` and the clipped grads
`clip.<i>.grad.<name>`. Metadata `config` (JSON): per-step lrs, betas, eps, weight_decay,
clip max_norms.
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

    config = {"lrs": LRS, "betas": BETAS, "eps": EPS, "weight_decay": WD, "max_norms": MAX_NORMS}
    save_file({k: v.contiguous() for k, v in t.items()}, out, metadata={"config": json.dumps(config)})


if __name__ == "__main__":
    main()
