"""Exports torchvision's VGG16 convolutional weights (`features.*`) for the perceptual loss.

    python scripts/export_vgg16.py [--output weights/vgg16.safetensors]
        [--from-pth vgg16-397923af.pth | --random-init --seed N [--save-pth full.pth]]

Without options it loads `vgg16(weights=VGG16_Weights.IMAGENET1K_V1)`, which downloads about
528 MB once into torch's cache (~/.cache/torch/hub/checkpoints/vgg16-397923af.pth, or under
$TORCH_HOME): run it on a machine with internet and copy the output (about 59 MB) next to the
project. --from-pth converts that cached file (a torch.save'd state dict of the whole VGG16;
copy it from any machine that has it) without a download. --random-init needs no download; it
is for tests, and also draws the conv biases (torchvision sets them to 0) so a bias that is not
loaded shows; --save-pth also saves that model's whole state dict the way torchvision's file
holds it. Files are written atomically (temp file in the same folder, then renamed).
"""
import argparse
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file

CACHE_HINT = "torchvision caches it as ~/.cache/torch/hub/checkpoints/vgg16-397923af.pth"


def fail(msg):
    """A user error: one line, exit 2 (the project's convention)."""
    print(f"export_vgg16: {msg}", file=sys.stderr)
    sys.exit(2)


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


def expected_shapes():
    """`features.*` keys and shapes of torchvision's VGG16 (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features
    return {f"features.{k}": tuple(v.shape) for k, v in features.state_dict().items()}


def load_error(e):
    """The reason in torch.load's error, without its multi-line advice (weights_only=False is not an option here)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1]
        reason = next((s.strip() for s in rest.splitlines() if s.strip()), "")
        if "Unsupported global" in reason:
            return f"{reason.split(' was not')[0]}: a pickled object, save model.state_dict() instead"
        return reason
    return (text.strip().splitlines() or [type(e).__name__])[0]


def load_pth(path):
    """The `features.*` tensors of a torch.save'd VGG16 state dict, checked against torchvision's shapes."""
    if not os.path.isfile(path):
        fail(f"--from-pth {path}: no such file; {CACHE_HINT}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors alike
        fail(f"--from-pth {path}: not a torch.save'd state dict ({load_error(e)}); {CACHE_HINT}")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        fail(f"--from-pth {path}: holds a {type(sd).__name__}, not a state dict of tensors "
             "(keys features.N.weight/bias)")
    shapes = expected_shapes()
    missing = [k for k in shapes if k not in sd]
    if missing:
        fail(f"--from-pth {path}: not torchvision's VGG16, {len(missing)} features.* keys missing "
             f"({', '.join(missing[:3])})")
    wrong = [f"{k} {tuple(sd[k].shape)} (want {s})" for k, s in shapes.items() if tuple(sd[k].shape) != s]
    if wrong:
        fail(f"--from-pth {path}: not torchvision's VGG16, mis-shaped {', '.join(wrong[:3])}")
    return {k: sd[k] for k in shapes}, f"torchvision vgg16 state dict {os.path.basename(path)}"


def write_atomic(path, write):
    out = os.path.abspath(path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="weights/vgg16.safetensors")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--from-pth", metavar="PATH", help=f"convert a saved state dict, no download ({CACHE_HINT})")
    src.add_argument("--random-init", action="store_true", help="no download; for tests")
    ap.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    ap.add_argument("--save-pth", metavar="PATH", help="also torch.save the built model's whole state dict (tests)")
    args = ap.parse_args()
    if args.from_pth and args.save_pth:
        fail("--save-pth saves a model this script builds; it does not go with --from-pth")
    if args.from_pth:
        features, source = load_pth(args.from_pth)
    else:
        try:
            model, source = build(args.random_init, args.seed)
        except OSError as e:  # urllib errors are OSErrors
            fail(f"cannot download the ImageNet VGG16 weights ({e}); run this on a machine with internet, "
                 f"or convert a copy of its cached file with --from-pth ({CACHE_HINT})")
        features = {f"features.{k}": v for k, v in model.features.state_dict().items()}
        if args.save_pth:
            write_atomic(args.save_pth, lambda p: torch.save(model.state_dict(), p))
    tensors = {k: v.detach().float().contiguous() for k, v in features.items()}
    out = write_atomic(args.output, lambda p: save_file(tensors, p, metadata={"source": source}))
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n} parameters ({source})", file=sys.stderr)


if __name__ == "__main__":
    main()
