"""Reads a TensorBoard log folder back with TensorBoard's own loader (tests/tensorboard.rs).

    python scripts/reference/read_tfevents.py LOG_DIR

Prints JSON: the event files, the parsed file_version, every scalar as [step, value, wall_time]
and every image as its step, width, height and decoded RGB bytes (hex, row-major HWC).
"""
import io
import json
import os
import sys

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    log_dir = sys.argv[1]
    ea = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = ea.Tags()
    out = {
        "files": sorted(os.listdir(log_dir)),
        "file_version": ea.file_version,
        "scalars": {
            t: [[e.step, e.value, e.wall_time] for e in ea.Scalars(t)] for t in tags["scalars"]
        },
        "images": {},
    }
    for t in tags["images"]:
        out["images"][t] = []
        for e in ea.Images(t):
            png = Image.open(io.BytesIO(e.encoded_image_string))
            rgb = np.asarray(png.convert("RGB"))
            out["images"][t].append(
                {
                    "step": e.step,
                    "width": e.width,
                    "height": e.height,
                    "format": png.format,
                    "decoded_hw": list(rgb.shape[:2]),
                    "rgb_hex": rgb.tobytes().hex(),
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
