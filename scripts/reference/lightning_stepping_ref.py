"""Reference for the two epoch steppings of src/train/schedule.rs (tests/it/schedule.rs runs it).

    python scripts/reference/lightning_stepping_ref.py [N_CASES]

A transcription of Lightning-bolts' LinearWarmupCosineAnnealingLR (the class upstream PromptIR
vendors in utils/schedulers.py) as a torch LRScheduler, driven by torch 2.11's own scheduler
machinery and a real AdamW, two ways:

- "upstream": as upstream's train.py under Lightning. The constructor sets the first rate; after
  each training epoch Lightning calls the module's `lr_scheduler_step`, which upstream overrides
  with `scheduler.step(self.current_epoch)` (the epoch just finished; torch then uses
  `_get_closed_form_lr`). So epoch e trains at lr(e - 1), and epochs 0 and 1 at the start rate.
- "closed": the same class stepped with `scheduler.step(e)` before epoch e: epoch e trains at
  lr(e), the closed form itself (this project's `schedule_unit: epoch`).

Prints one JSON object per line: the parameters, the epoch and the rate each stepping trained
that epoch at (read from the optimizer's param group, as AdamW reads it).
"""
import json
import math
import random
import sys
import warnings

import torch


class LinearWarmupCosineAnnealingLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warmup from warmup_start_lr to the base rate over warmup_epochs, then cosine to
    eta_min at max_epochs (Lightning-bolts 0.7)."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0):
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min
        super().__init__(optimizer)

    def get_lr(self):
        # Only the constructor's initial step reaches this here (upstream always passes the
        # epoch); bolts starts every schedule at warmup_start_lr.
        if self.last_epoch != 0:
            raise RuntimeError("this reference steps with an epoch only")
        return [self.warmup_start_lr for _ in self.base_lrs]

    def _get_closed_form_lr(self):
        e, w, m = self.last_epoch, self.warmup_epochs, self.max_epochs
        if e < w:
            # bolts divides by w - 1, which raises for warmup_epochs 1; max() is the project's pin
            return [self.warmup_start_lr + e * (b - self.warmup_start_lr) / max(1, w - 1) for b in self.base_lrs]
        cos = 1 + math.cos(math.pi * (e - w) / (m - w))
        return [self.eta_min + 0.5 * (b - self.eta_min) * cos for b in self.base_lrs]


def rates(p, epochs, upstream):
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([weight], lr=p["lr"])
    sched = LinearWarmupCosineAnnealingLR(
        opt, int(p["warmup_epochs"]), int(p["max_epochs"]), p["warmup_start_lr"], p["eta_min"]
    )
    out = []
    for e in range(epochs):
        if not upstream:
            sched.step(e)
        out.append(opt.param_groups[0]["lr"])
        weight.grad = torch.ones(1)
        opt.step()  # an epoch of training, reduced to one step
        if upstream:
            sched.step(e)  # Lightning's epoch-end hook, with current_epoch = e
    return out


def main():
    warnings.simplefilter("ignore")  # torch's deprecation warning for step(epoch)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    rng = random.Random(20261201)
    cases = [dict(lr=2e-4, warmup_start_lr=0.0, eta_min=0.0, warmup_epochs=15, max_epochs=150)]
    for _ in range(n - 1):
        lr = 10 ** rng.uniform(-5, -2)
        w = rng.choice([0, 1, 2, rng.randint(3, 30)])
        cases.append(
            dict(
                lr=lr,
                warmup_start_lr=rng.choice([0.0, rng.uniform(0, lr)]),
                eta_min=rng.choice([0.0, rng.uniform(0, lr / 10)]),
                warmup_epochs=w,
                max_epochs=w + rng.randint(1, 200),
            )
        )
    for case, p in enumerate(cases):
        epochs = int(p["max_epochs"]) + 1
        up, closed = rates(p, epochs, True), rates(p, epochs, False)
        for e in range(epochs):
            print(json.dumps({**p, "case": case, "epoch": e, "upstream": up[e], "closed": closed[e]}))


if __name__ == "__main__":
    main()
