"""Reference PSNR of a `promptir synth` dataset, for tests/synth.rs.

    python scripts/reference/synth_psnr.py DATASET_DIR

Prints JSON {degraded path relative to DATASET_DIR: PSNR in dB against its clean image}, with
PromptIR's evaluation convention: skimage PSNR on RGB u8, data_range 255, no crop.
"""
import glob
import json
import os
import sys

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio


def load(path):
    return np.array(Image.open(path).convert("RGB"))


def main(root):
    out = {}
    for deg in sorted(glob.glob(os.path.join(root, "train/degraded/*.png"))):
        kind, k = os.path.basename(deg)[: -len(".png")].split("-")
        clean = os.path.join(root, "train/clean", f"{kind}_clean-{k}.png")
        out[os.path.relpath(deg, root)] = peak_signal_noise_ratio(load(clean), load(deg), data_range=255)
    for deg in sorted(glob.glob(os.path.join(root, "test/degraded/*.png"))):
        clean = os.path.join(root, "test/clean", os.path.basename(deg))
        out[os.path.relpath(deg, root)] = peak_signal_noise_ratio(load(clean), load(deg), data_range=255)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
