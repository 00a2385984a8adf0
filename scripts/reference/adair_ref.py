"""A plain PyTorch AdaIR written for this repository: Restormer (restormer_ref) with an adaptive
frequency learning block after the latent and after decoder levels 3 and 2. Each block splits a
conv of the (resized) input image into high and low frequencies with an FFT mask whose size a
small conv predicts, attends from each to the features (channel cross-attention), fuses them
(spatial and channel gates) and attends back, scaled by a learned `para1` (zero at init).

It is the reference the Rust port is tested against (tests/it/parity.rs). Checked once against
the official c-yn/AdaIR net/model.py at commit ccb8b98 (class AdaIR, decoder=True): the same
587 state_dict keys in the same order (28,784,824 parameters), and the same output and gradients
(max abs difference 0; `python adair_ref.py OFFICIAL_DIR` repeats it, OFFICIAL_DIR holding
upstream's net/model.py as adair_model.py) for the paper config at 64x64 and TINY at 32x40 and at 512x512, where the
mask of the last block can open. Upstream defines `conv` and `score_gen` in each block but never runs them;
they are kept (so the keys are the official ones) and get no gradient, like `rate_conv`, whose
output reaches the loss only through an integer mask size.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from promptir_ref import compare_with_official, perturb_  # noqa: E402
from restormer_ref import Restormer  # noqa: E402

PAPER = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
             heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, layer_norm_type="with_bias", decoder=True)
TINY = dict(PAPER, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 4])

# Upstream's frequency split divides the side by this before scaling it by the predicted rate.
MASK_DIVISOR = 128


class ChanelCrossAttention(nn.Module):
    """MDTA with queries from one map and keys/values from another, through a depthwise conv of
    `kv_kernel` (AdaIR's: 3; MoCE-IR's CrossAttention: 7)."""

    def __init__(self, c, heads, bias, kv_kernel=3):
        super().__init__()
        self.num_head = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.q = nn.Conv2d(c, c, 1, bias=bias)
        self.q_dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=bias)
        self.kv = nn.Conv2d(c, 2 * c, 1, bias=bias)
        self.kv_dwconv = nn.Conv2d(2 * c, 2 * c, kv_kernel, padding=kv_kernel // 2, groups=2 * c, bias=bias)
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)

    def forward(self, x, y):
        b, c, h, w = x.shape
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(y)).chunk(2, dim=1)

        def split(t):
            return t.reshape(b, self.num_head, c // self.num_head, h * w)

        q, k, v = F.normalize(split(q), dim=-1), F.normalize(split(k), dim=-1), split(v)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        pooled = torch.cat([x.max(1, keepdim=True)[0], x.mean(1, keepdim=True)], 1)
        return torch.sigmoid(self.spatial(pooled))


class ChannelGate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(c, c // 16, 1, bias=False), nn.ReLU(), nn.Conv2d(c // 16, c, 1, bias=False))

    def forward(self, x):
        return torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))


class FreRefine(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.SpatialGate = SpatialGate()
        self.ChannelGate = ChannelGate(c)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, low, high):
        # Upstream's order of operations, so that gradients accumulate (and round) alike.
        spatial, channel = self.SpatialGate(high), self.ChannelGate(low)
        high = high * channel
        low = low * spatial
        return self.proj(low + high)


class FreModule(nn.Module):
    def __init__(self, c, heads, bias, in_dim=3):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, c, 3, padding=1, bias=False)  # never run upstream
        self.conv1 = nn.Conv2d(in_dim, c, 3, padding=1, bias=False)
        self.score_gen = nn.Conv2d(2, 2, 7, padding=3)  # never run upstream
        self.para1 = nn.Parameter(torch.zeros(c, 1, 1))
        self.para2 = nn.Parameter(torch.ones(c, 1, 1))
        self.channel_cross_l = ChanelCrossAttention(c, heads, bias)
        self.channel_cross_h = ChanelCrossAttention(c, heads, bias)
        self.channel_cross_agg = ChanelCrossAttention(c, heads, bias)
        self.frequency_refine = FreRefine(c)
        self.rate_conv = nn.Sequential(nn.Conv2d(c, c // 8, 1, bias=False), nn.GELU(),
                                       nn.Conv2d(c // 8, 2, 1, bias=False))

    def split(self, x):
        """(high, low): |ifft| of the spectrum outside / inside a centred box of predicted size."""
        x = self.conv1(x)
        h, w = x.shape[-2:]
        rate = self.rate_conv(F.adaptive_avg_pool2d(x, 1)).sigmoid()
        mask = torch.zeros_like(x)
        self.last_mask_sizes = []
        for i in range(x.shape[0]):
            # Upstream: (h // n * rate).int(), the product in float32.
            mh = int((h // MASK_DIVISOR * rate[i, 0, 0, 0]).int())
            mw = int((w // MASK_DIVISOR * rate[i, 1, 0, 0]).int())
            self.last_mask_sizes.append((mh, mw))
            mask[i, :, h // 2 - mh:h // 2 + mh, w // 2 - mw:w // 2 + mw] = 1
        spectrum = torch.roll(torch.fft.fft2(x, norm="forward"), shifts=(h // 2, w // 2), dims=(2, 3))

        def back(s):
            return torch.fft.ifft2(torch.roll(s, shifts=(-(h // 2), -(w // 2)), dims=(2, 3)), norm="forward").abs()

        return back(spectrum * (1 - mask)), back(spectrum * mask)

    def forward(self, img, y):
        high, low = self.split(F.interpolate(img, y.shape[-2:], mode="bilinear"))
        high = self.channel_cross_l(high, y)
        low = self.channel_cross_h(low, y)
        agg = self.frequency_refine(low, high)
        return self.channel_cross_agg(y, agg) * self.para1 + y * self.para2


class AdaIR(Restormer):
    def __init__(self, cfg=PAPER):
        def frequency_blocks(net):  # right after the stem, as upstream registers them
            d, h, bias = cfg["dim"], cfg["heads"][2], cfg["bias"]
            net.decoder = cfg["decoder"]
            if net.decoder:
                net.fre1 = FreModule(8 * d, h, bias)
                net.fre2 = FreModule(4 * d, h, bias)
                net.fre3 = FreModule(2 * d, h, bias)

        super().__init__({k: v for k, v in cfg.items() if k != "decoder"}, after_embed=frequency_blocks)

    def forward(self, x):
        blocks = {"latent": "fre1", "decoder3": "fre2", "decoder2": "fre3"}
        return super().forward(x, tap=lambda at, f: getattr(self, blocks[at])(x, f) if self.decoder else f)


def perturb_adair_(module, seed, scale=1.0):
    """promptir_ref.perturb_ plus the frequency blocks' scales (para1 is zero at init, which
    would hide each block's whole attention path)."""
    perturb_(module, seed, scale)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("para1", "para2")):
                p.add_(0.5 * scale * torch.randn(p.shape, generator=g))
    return module


def upstream_kwargs(cfg):
    kw = {k: v for k, v in cfg.items() if k != "layer_norm_type"}
    kw["LayerNorm_type"] = {"with_bias": "WithBias", "bias_free": "BiasFree"}[cfg["layer_norm_type"]]
    return kw


def check_against_official(official_dir):
    sys.path.insert(0, official_dir)
    import adair_model  # the official net/model.py (needs einops)

    for cfg, hw in [(PAPER, (64, 64)), (TINY, (32, 40)), (TINY, (512, 512))]:
        torch.manual_seed(0)
        theirs = perturb_adair_(adair_model.AdaIR(**upstream_kwargs(cfg)), 1, 0.3)
        out, grad = compare_with_official(theirs, AdaIR(cfg), torch.rand(2, 3, *hw))
        n = sum(p.numel() for p in theirs.parameters())
        print(f"dim {cfg['dim']} at {hw}: {n} parameters, max |out diff| {out:.3g}, max |grad diff| {grad:.3g}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        check_against_official(sys.argv[1])
    else:
        print(sum(p.numel() for p in AdaIR(PAPER).parameters()))
