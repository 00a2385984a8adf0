"""Reference values for src/schedule.rs (tests/schedule.rs runs this).

    python scripts/reference/schedule_ref.py [N_CASES]

Prints one JSON object per line: random schedule parameters, an epoch and the learning rate of
the closed form of Lightning-bolts' LinearWarmupCosineAnnealingLR (`_get_closed_form_lr`), which
upstream PromptIR steps once per epoch. Epochs are drawn only where that closed form is the
intended schedule: 0 <= e <= max_epochs, and no fractional epoch inside the last warmup epoch.
"""
import json
import math
import random
import sys


def closed_form(e, lr, warmup_start_lr, eta_min, warmup_epochs, max_epochs):
    if e < warmup_epochs:
        return warmup_start_lr + e * (lr - warmup_start_lr) / max(1, warmup_epochs - 1)
    return eta_min + 0.5 * (lr - eta_min) * (
        1 + math.cos(math.pi * (e - warmup_epochs) / (max_epochs - warmup_epochs))
    )


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 24
    rng = random.Random(20240611)
    for case in range(n):
        lr = 10 ** rng.uniform(-5, -2)
        p = {
            "lr": lr,
            "warmup_start_lr": rng.choice([0.0, rng.uniform(0, lr)]),
            "eta_min": rng.choice([0.0, rng.uniform(0, lr / 10)]),
            "warmup_epochs": float(rng.choice([0, 1, 2, rng.randint(3, 30)])),
            "max_epochs": None,
        }
        p["max_epochs"] = p["warmup_epochs"] + float(rng.randint(1, 200))
        w, m = p["warmup_epochs"], p["max_epochs"]
        epochs = [float(e) for e in range(int(m) + 1)]
        epochs += [rng.uniform(0, max(w - 1, 0)) for _ in range(5) if w > 1]
        epochs += [rng.uniform(w, m) for _ in range(5)]
        for e in epochs:
            lr_e = closed_form(e, p["lr"], p["warmup_start_lr"], p["eta_min"], w, m)
            print(json.dumps({**p, "case": case, "epoch": e, "value": lr_e}))


if __name__ == "__main__":
    main()
