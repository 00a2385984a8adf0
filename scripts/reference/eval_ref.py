#!/usr/bin/env python3
"""Reference numbers for `promptir eval`: scikit-image PSNR/SSIM of restored PNGs against their
targets, per image and averaged per degradation type, plus the identity baseline.

    eval_ref.py --pred DIR --degraded DIR --clean DIR [--types types.json]

Pairs are the images in --degraded; the restored image of `<stem>.<ext>` is `--pred/<stem>.png`
(what `promptir predict --png-dir` writes) and its target is `--clean/<name>`. Types come from
--types ({"0.png": "rain", ...}), else every image is "test".

Conventions (the leaderboard's and PromptIR's): PSNR on uint8 RGB with data_range 255, per image,
then averaged; SSIM is structural_similarity(gt, pred, data_range=255, channel_axis=-1).

Output: {"images": [{"name", "kind", "psnr", "ssim", "psnr_input", "ssim_input"}],
"psnr": {"all": .., "<kind>": ..}, "ssim": {..}, "psnr_input": {..}, "ssim_input": {..}}.
"""

import argparse
import json
import os

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def load(path):
    return np.array(Image.open(path).convert("RGB"))


def scores(pred, gt):
    return (
        float(peak_signal_noise_ratio(gt, pred, data_range=255)),
        float(structural_similarity(gt, pred, data_range=255, channel_axis=-1)),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred", required=True)
    ap.add_argument("--degraded", required=True)
    ap.add_argument("--clean", required=True)
    ap.add_argument("--types")
    a = ap.parse_args()
    types = json.load(open(a.types)) if a.types else {}
    rows = []
    for name in sorted(os.listdir(a.degraded)):
        stem = os.path.splitext(name)[0]
        deg = load(os.path.join(a.degraded, name))
        gt = load(os.path.join(a.clean, name))
        pred = load(os.path.join(a.pred, stem + ".png"))
        psnr, ssim = scores(pred, gt)
        psnr_in, ssim_in = scores(deg, gt)
        rows.append(
            dict(
                name=name,
                kind=types.get(name, "test"),
                psnr=psnr,
                ssim=ssim,
                psnr_input=psnr_in,
                ssim_input=ssim_in,
            )
        )
    out = {"images": rows}
    for metric in ["psnr", "ssim", "psnr_input", "ssim_input"]:
        groups = {"all": [r[metric] for r in rows]}
        for r in rows:
            groups.setdefault(r["kind"], []).append(r[metric])
        out[metric] = {k: float(np.mean(v)) for k, v in groups.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
