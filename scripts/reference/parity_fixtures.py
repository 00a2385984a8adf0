"""Writes the PyTorch side of the parity tests (tests/parity.rs) into a folder.

    python scripts/reference/parity_fixtures.py OUT_DIR

Each `*.safetensors` holds the module's parameters under `param.<state_dict key>`, its input
under `input` and PyTorch's output under `output` (plus `grad.<key>` where gradients are
checked); the metadata holds the constructor arguments as JSON. Parameters are moved away from
their init first (promptir_ref.perturb_), so ignoring a norm weight or a temperature fails.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promptir_ref as ref  # noqa: E402
import adair_ref  # noqa: E402
import moce_ir_ref  # noqa: E402
import nafnet_ref  # noqa: E402
import restormer_ref  # noqa: E402


def dump(path, module, x, args, grads=False, out=None, scale=1.0, perturb=ref.perturb_):
    module = perturb(module, 1, scale)
    if grads:
        x = x.clone()
        y = module(x) if out is None else out(module, x)
        # A loss that weighs every output element differently, so each gradient path counts.
        w = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
        (y * w).sum().backward()
    else:
        with torch.no_grad():
            y = module(x) if out is None else out(module, x)
    t = {f"param.{k}": v.detach().contiguous() for k, v in module.state_dict().items()}
    t["input"], t["output"] = x.detach().contiguous(), y.detach().contiguous()
    if grads:
        for k, p in module.named_parameters():
            if p.grad is not None:
                t[f"grad.{k}"] = p.grad.contiguous()
    save_file(t, path, metadata={"args": json.dumps(args)})


def padded_forward(m, x, mult=8):
    h, w = x.shape[-2:]
    ph, pw = (mult - h % mult) % mult, (mult - w % mult) % mult
    return m(F.pad(x, (0, pw, 0, ph), mode="reflect"))[..., :h, :w]


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)

    def r(*s):
        return torch.randn(*s)

    def p(name):
        return os.path.join(out, name + ".safetensors")

    dump(p("layernorm_with_bias"), ref.LayerNorm(24, "with_bias"), r(2, 24, 5, 7), dict(dim=24, kind="with_bias"))
    dump(p("layernorm_bias_free"), ref.LayerNorm(24, "bias_free"), r(2, 24, 5, 7), dict(dim=24, kind="bias_free"))
    dump(p("attention"), ref.Attention(24, 3, False), r(2, 24, 6, 5), dict(dim=24, heads=3, bias=False))
    dump(p("attention_bias"), ref.Attention(16, 2, True), r(1, 16, 4, 4), dict(dim=16, heads=2, bias=True))
    dump(p("feedforward"), ref.FeedForward(48, 2.66, False), r(2, 48, 5, 6), dict(dim=48, factor=2.66, bias=False))
    dump(p("transformer_block"), ref.TransformerBlock(32, 2, 2.66, False, "with_bias"), r(2, 32, 8, 6),
         dict(dim=32, heads=2, factor=2.66, bias=False, kind="with_bias"))
    dump(p("transformer_block_bias_free"), ref.TransformerBlock(16, 4, 2.66, True, "bias_free"), r(1, 16, 4, 8),
         dict(dim=16, heads=4, factor=2.66, bias=True, kind="bias_free"))
    dump(p("downsample"), ref.Downsample(12), r(2, 12, 8, 6), dict(dim=12))
    dump(p("upsample"), ref.Upsample(12), r(2, 12, 4, 3), dict(dim=12))
    dump(p("overlap_patch_embed"), ref.OverlapPatchEmbed(3, 16, False), r(2, 3, 9, 7), dict(cin=3, dim=16))
    # Prompt blocks: feature size equal to the prompt size (identity resize), 2x, and a non-integer scale.
    for name, hw in [("prompt_same", (8, 8)), ("prompt_2x", (16, 16)), ("prompt_odd", (11, 6))]:
        dump(p(name), ref.PromptGenBlock(12, 5, 8, 20), r(2, 20, *hw), dict(dim=12, len=5, size=8, lin_dim=20))
    # Whole networks.
    dump(p("model_tiny"), ref.PromptIR(ref.TINY), torch.rand(2, 3, 32, 40), ref.TINY, grads=True)
    dump(p("model_tiny_padded"), ref.PromptIR(ref.TINY), torch.rand(1, 3, 27, 35), ref.TINY, out=padded_forward)
    # Smaller perturbation at full depth: 40 residual blocks with norm weights far from 1 blow
    # the output up to ~1e3, where float32 rounding alone exceeds the 1e-4 tolerance.
    dump(p("model_paper"), ref.PromptIR(ref.PAPER), torch.rand(1, 3, 64, 64), ref.PAPER, scale=0.2)
    # Restormer: tiny with gradients, reflect-padded odd sizes, the other LayerNorm with biases,
    # and the paper config at 64x64. Half the perturbation: at full scale its tiny output
    # reaches ~200, where the reference's own float32 rounding is 1.3e-4 (against float64).
    rt = restormer_ref.TINY
    dump(p("restormer_tiny"), restormer_ref.Restormer(rt), torch.rand(2, 3, 32, 40), rt, grads=True, scale=0.5)
    dump(p("restormer_tiny_padded"), restormer_ref.Restormer(rt), torch.rand(1, 3, 27, 35), rt, out=padded_forward,
         scale=0.5)
    rb = dict(rt, layer_norm_type="bias_free", bias=True)
    dump(p("restormer_bias_free"), restormer_ref.Restormer(rb), torch.rand(1, 3, 24, 16), rb, scale=0.5)
    dump(p("restormer_paper"), restormer_ref.Restormer(restormer_ref.PAPER), torch.rand(1, 3, 64, 64),
         restormer_ref.PAPER, scale=0.2)
    # As BasicSR releases it: {'params': state_dict} in a .pth.
    m = ref.perturb_(restormer_ref.Restormer(rb), 3)
    torch.save({"params": m.state_dict()}, os.path.join(out, "restormer_basicsr.pth"))
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        save_file({"input": x, "output": m(x)}, p("restormer_basicsr_io"))
    # NAFNet: tiny with gradients at a size its forward zero-pads (40 -> 48), an odd size, and the
    # SIDD config at 64x64; beta and gamma moved off zero (each block is the identity at init).
    nt, np_ = nafnet_ref.TINY, nafnet_ref.perturb_
    dump(p("nafnet_tiny"), nafnet_ref.NAFNet(nt), torch.rand(2, 3, 32, 40), nt, grads=True, perturb=np_)
    dump(p("nafnet_tiny_odd"), nafnet_ref.NAFNet(nt), torch.rand(1, 3, 27, 35), nt, perturb=np_)
    dump(p("nafnet_sidd"), nafnet_ref.NAFNet(nafnet_ref.SIDD), torch.rand(1, 3, 64, 64), nafnet_ref.SIDD,
         perturb=np_, scale=0.5)
    m = np_(nafnet_ref.NAFNet(nt), 3)
    torch.save({"params": m.state_dict()}, os.path.join(out, "nafnet_basicsr.pth"))
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        save_file({"input": x, "output": m(x).contiguous()}, p("nafnet_basicsr_io"))
    # AdaIR: tiny with gradients (the frequency boxes are empty below 128 pixels per level), at
    # 512x512 where the last block's box is not (the seed is searched for one whose predicted
    # rate opens it), and the paper config at 64x64. As upstream releases it: a Lightning .ckpt.
    at = adair_ref.TINY
    pa = adair_ref.perturb_adair_
    dump(p("adair_tiny"), adair_ref.AdaIR(at), torch.rand(2, 3, 32, 40), at, grads=True, perturb=pa, scale=0.5)
    for seed in range(100):
        torch.manual_seed(seed)
        m = pa(adair_ref.AdaIR(at), 1, 0.5)
        x = torch.rand(1, 3, 512, 512)
        with torch.no_grad():
            m(x)
        if any(h > 0 and w > 0 for h, w in m.fre3.last_mask_sizes):
            break
    else:
        raise SystemExit("no seed opens AdaIR's frequency box")
    dump(p("adair_tiny_masked"), m, x, dict(at, mask_sizes=m.fre3.last_mask_sizes), perturb=lambda mod, *_: mod)
    dump(p("adair_paper"), adair_ref.AdaIR(adair_ref.PAPER), torch.rand(1, 3, 64, 64), adair_ref.PAPER, perturb=pa,
         scale=0.2)
    m = pa(adair_ref.AdaIR(at), 3, 0.5)  # at full scale its output reaches ~200 (see Restormer's)
    torch.save({"epoch": 1, "state_dict": {f"net.{k}": v for k, v in m.state_dict().items()}},
               os.path.join(out, "adair_lightning.ckpt"))
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        save_file({"input": x, "output": m(x)}, p("adair_lightning_io"))
    # MoCE-IR in eval mode (deterministic, per-image routing): tiny with gradients at batch 2,
    # reflect-padded odd sizes, the paper config at 64x64. Then training mode with given noise,
    # top 2 of 4 experts and the complexity-weighted importance at batch 3 (so that experts get
    # subsets of the batch): output, balance loss and gradients of (y * w).sum() + balance.
    mt = moce_ir_ref.TINY
    # Half the perturbation, as Restormer's: at full scale the padded output differed by 1.03e-4,
    # float32 rounding of a larger output.
    dump(p("moce_ir_tiny"), moce_ir_ref.MoCEIR(mt).eval(), torch.rand(2, 3, 32, 40), mt, grads=True, scale=0.5)
    dump(p("moce_ir_tiny_padded"), moce_ir_ref.MoCEIR(mt).eval(), torch.rand(1, 3, 27, 35), mt, out=padded_forward,
         scale=0.5)
    dump(p("moce_ir_paper"), moce_ir_ref.MoCEIR(moce_ir_ref.PAPER).eval(), torch.rand(1, 3, 64, 64),
         moce_ir_ref.PAPER, scale=0.2)
    mc = dict(mt, topk=2, with_complexity=True)
    m = ref.perturb_(moce_ir_ref.MoCEIR(mc), 1)
    x = torch.rand(3, 3, 32, 40)
    noise = torch.randn(m.decoder_blocks(), 3, mc["num_experts"])
    y = m(x, list(noise))
    w = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    ((y * w).sum() + m.total_loss).backward()
    routed = [n for mod in m.modules() if isinstance(mod, moce_ir_ref.AdapterLayer) for n in mod.last_routed]
    partial = sum(0 < n < x.shape[0] for n in routed)
    if partial == 0:
        raise SystemExit("no MoCE-IR expert got part of the batch: pick another seed")
    t = {f"param.{k}": v.detach().contiguous() for k, v in m.state_dict().items()}
    t.update({f"grad.{k}": q.grad.contiguous() for k, q in m.named_parameters() if q.grad is not None})
    t.update(input=x, noise=noise, output=y.detach().contiguous(), balance=m.total_loss.detach().reshape(1))
    save_file(t, p("moce_ir_train"), metadata={"args": json.dumps(mc), "partial": str(partial)})
    # The routing's complexity buffers as upstream scales them (none: the raw int64 counts).
    for scale in ("max", "min", "none"):
        net = moce_ir_ref.MoCEIR(dict(mt, complexity_scale=scale))
        save_file({k: v.contiguous() for k, v in net.state_dict().items() if k.endswith(".complexity")},
                  p(f"moce_ir_complexity_{scale}"))
    m = ref.perturb_(moce_ir_ref.MoCEIR(mt), 3).eval()
    torch.save({"epoch": 1, "state_dict": {f"net.{k}": v for k, v in m.state_dict().items()}},
               os.path.join(out, "moce_ir_lightning.ckpt"))
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        save_file({"input": x, "output": m(x)}, p("moce_ir_lightning_io"))
    # An official-layout Lightning checkpoint (net. prefix, the six unused modules, optimizer state).
    m = ref.perturb_(ref.PromptIR(ref.TINY, with_unused=True), 2)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y = m(x)
    torch.save({"epoch": 3, "global_step": 30, "state_dict": {f"net.{k}": v for k, v in m.state_dict().items()},
                "optimizer_states": [{"state": {}}], "lr_schedulers": []}, os.path.join(out, "lightning.ckpt"))
    torch.save(m.state_dict(), os.path.join(out, "plain.pth"))
    torch.save({"epoch": 1, "something": [1, 2]}, os.path.join(out, "no_state_dict.ckpt"))
    save_file({"input": x, "output": y}, p("lightning_io"))


if __name__ == "__main__":
    main(sys.argv[1])
