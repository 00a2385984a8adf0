#!/usr/bin/env python3
"""Checks a pred.npz the way the leaderboard reads it (np.load) and prints what it found as JSON.

    check_pred.py PRED.npz [--png-dir DIR] [--dump DIR]

- every entry must be uint8 of shape (3, H, W), and the zip must hold Stored `<key>.npy` entries
  (the np.savez layout); violations exit with status 1;
- --png-dir: each entry must equal `<stem>.png` there, read with PIL as (3, H, W);
- --dump: writes each array's C-order bytes to DIR/<key>.bin (for byte comparisons in tests).

Output: {"keys": [...], "entries": {key: {"dtype", "shape"}}, "zip": [[name, method], ...],
"png_equal": {key: bool}}.
"""

import argparse
import json
import os
import sys
import zipfile

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("npz")
    ap.add_argument("--png-dir")
    ap.add_argument("--dump")
    a = ap.parse_args()

    with zipfile.ZipFile(a.npz) as z:
        zip_entries = [[i.filename, "stored" if i.compress_type == zipfile.ZIP_STORED else "deflated"]
                       for i in z.infolist()]
    d = np.load(a.npz)
    out = {"keys": list(d.files), "entries": {}, "zip": zip_entries, "png_equal": {}}
    problems = []
    for k in d.files:
        arr = d[k]
        out["entries"][k] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] != 3:
            problems.append(f"{k}: {arr.dtype} {arr.shape}, expected uint8 (3, H, W)")
        if a.png_dir:
            from PIL import Image

            stem = os.path.splitext(k)[0]
            png = np.array(Image.open(os.path.join(a.png_dir, stem + ".png")).convert("RGB"))
            out["png_equal"][k] = bool(np.array_equal(png.transpose(2, 0, 1), arr))
        if a.dump:
            os.makedirs(a.dump, exist_ok=True)
            with open(os.path.join(a.dump, k + ".bin"), "wb") as f:
                f.write(np.ascontiguousarray(arr).tobytes())
    for name, method in zip_entries:
        if method != "stored" or not name.endswith(".npy"):
            problems.append(f"zip entry {name}: {method}, expected a Stored <key>.npy")
    print(json.dumps(out))
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
