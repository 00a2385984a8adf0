"""Unpickles an official checkpoint and writes its tensors as safetensors.

Run by `promptir import` (the script travels inside the binary and is fed to the venv's python):
    python - IN OUT
Accepts a Lightning .ckpt (weights under "state_dict" with a "net." prefix: PromptIR, AdaIR,
MoCE-IR), BasicSR's .pth (weights under "params", as Restormer and NAFNet release them; BasicSR
reads "params" by default, so this does too before "params_ema") or a plain torch.save'd
state_dict (.pth/.pt). Key checks happen in Rust; this only converts.
Exit code 3 with one line on stderr for files that hold no state_dict.
"""
import sys

import torch
from safetensors.torch import save_file


def main(src, dst):
    # Lightning checkpoints hold non-tensor objects, so weights_only=True (the default since
    # torch 2.6) refuses them: only import files you trust.
    try:
        obj = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the user's file
        print(f"cannot unpickle {src}: {e}", file=sys.stderr)
        return 3
    sd = None
    if isinstance(obj, dict):
        sd = next((obj[k] for k in ("state_dict", "params", "params_ema") if k in obj), obj)
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        print(f"{src} holds no state_dict of tensors "
              "(expected a Lightning .ckpt, a BasicSR .pth or a torch.save'd state_dict)", file=sys.stderr)
        return 3
    if all(k.startswith("net.") for k in sd):
        sd = {k[len("net."):]: v for k, v in sd.items()}
    save_file({k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in sd.items()}, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
