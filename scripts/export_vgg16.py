"""Exports torchvision's VGG16 convolutional weights (`features.*`) for the perceptual loss.

    python scripts/export_vgg16.py [--output weights/vgg16.safetensors] [--random-init --seed N]

Without --random-init it loads `vgg16(weights=VGG16_Weights.IMAGENET1K_V1)`, which downloads
about 528 MB once into torch's cache: run it on a machine with internet and copy the output
(about 59 MB) next to the project. --random-init needs no download; it is for tests, and also
draws the conv biases (torchvision sets them to 0) so a bias that is not loaded shows.
The file is written atomically (temp file in the same folder, then renamed).
"""
import argparse
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file


def build(random_init, seed):
    if random_init:
        torch.manual_seed(seed)
        model = torchvision.models.vgg16(weights=None)
        with torch.no_grad():
            for m in model.features:
                if isinstance(m, torch.nn.Conv2d):
                    m.bias.uniform_(-0.1, 0.1)
        return model, f"torchvision vgg16 random init, seed {seed}"
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
    return torchvision.models.vgg16(weights=weights), f"torchvision vgg16 {weights}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="weights/vgg16.safetensors")
    ap.add_argument("--random-init", action="store_true", help="no download; for tests")
    ap.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    args = ap.parse_args()
    try:
        model, source = build(args.random_init, args.seed)
    except OSError as e:  # urllib errors are OSErrors
        sys.exit(f"export_vgg16: cannot download the ImageNet VGG16 weights ({e}); run this on a machine with internet")
    tensors = {f"features.{k}": v.detach().float().contiguous() for k, v in model.features.state_dict().items()}
    out = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        save_file(tensors, tmp, metadata={"source": source})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n} parameters ({source})", file=sys.stderr)


if __name__ == "__main__":
    main()
