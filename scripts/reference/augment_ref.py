"""Reference values for the augmentation tests (tests/augment.rs), from scipy and torchvision.

    python scripts/reference/augment_ref.py IMAGE.png OUT.safetensors PARAMS_JSON

PARAMS_JSON holds: rotate [{cy, cx, degrees, size}, ...], crop {top, left, size}, jitter
{brightness, contrast, saturation}, blur {sigma, kernel}. The output file holds, as float32
CHW tensors in [0, 1]:
  rotate.N: the Nth rotated window sampled bilinearly with mirrored borders (scipy map_coordinates,
          order 1, mode 'mirror' = PyTorch 'reflect');
  jitter: torchvision adjust_brightness -> adjust_contrast -> adjust_saturation of the crop;
  blur:   torchvision gaussian_blur of the crop (reflect padding).
"""
import json
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file
from scipy.ndimage import map_coordinates


def rotate(img, cy, cx, degrees, size):
    # Output pixel (y, x) samples the source at centre + R(-theta) (offset), y pointing down.
    t = np.deg2rad(degrees)
    half = (size - 1) / 2
    dy, dx = np.meshgrid(np.arange(size) - half, np.arange(size) - half, indexing="ij")
    sx = cx + dx * np.cos(t) - dy * np.sin(t)
    sy = cy + dx * np.sin(t) + dy * np.cos(t)
    chans = [map_coordinates(img[:, :, c], [sy, sx], order=1, mode="mirror") for c in range(3)]
    return torch.from_numpy(np.stack(chans)).float()


def main():
    src, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    img = np.asarray(Image.open(src).convert("RGB")).astype(np.float64) / 255.0
    c = params["crop"]
    crop = torch.from_numpy(img).float().permute(2, 0, 1)
    crop = crop[:, c["top"]:c["top"] + c["size"], c["left"]:c["left"] + c["size"]].contiguous()
    j = params["jitter"]
    jit = TF.adjust_brightness(crop, j["brightness"])
    jit = TF.adjust_contrast(jit, j["contrast"])
    jit = TF.adjust_saturation(jit, j["saturation"])
    b = params["blur"]
    blur = TF.gaussian_blur(crop, [b["kernel"]] * 2, [b["sigma"]] * 2)
    tensors = {"jitter": jit.contiguous(), "blur": blur.contiguous()}
    for i, r in enumerate(params["rotate"]):
        tensors[f"rotate.{i}"] = rotate(img, r["cy"], r["cx"], r["degrees"], r["size"]).contiguous()
    save_file(tensors, out)


if __name__ == "__main__":
    main()
