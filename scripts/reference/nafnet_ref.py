"""A plain PyTorch NAFNet written for this repository (NAFBlock: LayerNorm over channels,
1x1 -> depthwise 3x3 -> SimpleGate -> simplified channel attention -> 1x1, a gated 1x1 FFN, and
learned residual scales beta/gamma; a U-Net of 2x2 stride-2 downsampling convs and 1x1 +
PixelShuffle upsampling with additive skips; zero padding to a multiple of 2^levels inside
forward, cropped back).

It is the reference the Rust port is tested against (tests/it/parity.rs). Checked once against
the official megvii-research/NAFNet basicsr/models/archs/NAFNet_arch.py (class NAFNet, with
arch_util.LayerNorm2d) at commit 2b4af71: the same state_dict keys and shapes, and the same
output and gradients (max abs difference 0; `python nafnet_ref.py OFFICIAL_REPO` repeats it) for
the SIDD width-32 config at 64x64, the GoPro width-64 config at 48x48 and TINY at an odd size.
NAFNetLocal (GoPro's test-time local average pooling, "TLC") is not built.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# Upstream's configs (options/test/SIDD/NAFNet-width32.yml, options/test/GoPro/NAFNet-width64.yml).
SIDD = dict(img_channel=3, width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2])
GOPRO = dict(img_channel=3, width=64, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1])
TINY = dict(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1])


class _ChannelNorm(torch.autograd.Function):
    """LayerNorm over channels with upstream's hand-written backward (the textbook gradient,
    d x = (g - y mean(g y) - mean(g)) / sigma with g = dy * weight), so gradients round alike."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + eps).sqrt()
        ctx.save_for_backward(y, var, weight)
        ctx.eps = eps
        return weight.view(1, -1, 1, 1) * y + bias.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, dy):
        y, var, weight = ctx.saved_tensors
        g = dy * weight.view(1, -1, 1, 1)
        gx = 1.0 / torch.sqrt(var + ctx.eps) * (g - y * (g * y).mean(1, keepdim=True) - g.mean(1, keepdim=True))
        return gx, (dy * y).sum(dim=3).sum(dim=2).sum(dim=0), dy.sum(dim=3).sum(dim=2).sum(dim=0), None


class LayerNorm2d(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        return _ChannelNorm.apply(x, self.weight, self.bias, self.eps)


def gate(x):
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        dw = 2 * c
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp):
        x = gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        return y + self.conv5(gate(self.conv4(self.norm2(y)))) * self.gamma


class NAFNet(nn.Module):
    def __init__(self, cfg=SIDD):
        super().__init__()
        c, width = cfg["img_channel"], cfg["width"]
        self.intro = nn.Conv2d(c, width, 3, padding=1)
        self.ending = nn.Conv2d(width, c, 3, padding=1)
        # Registered in upstream's order, so the state_dict's order matches too.
        self.encoders, self.decoders, self.middle_blks, self.ups, self.downs = (nn.ModuleList() for _ in range(5))
        chan = width
        for n in cfg["enc_blk_nums"]:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(cfg["middle_blk_num"])])
        for n in cfg["dec_blk_nums"]:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
        self.multiple = 2 ** len(self.encoders)

    def forward(self, inp):
        h, w = inp.shape[-2:]
        m = self.multiple
        inp = F.pad(inp, (0, (m - w % m) % m, 0, (m - h % m) % m))
        x = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for dec, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = dec(up(x) + skip)
        return (self.ending(x) + inp)[:, :, :h, :w]


def perturb_(module, seed, scale=1.0):
    """Moves every parameter away from its init: beta and gamma start at 0, which would make every
    block an identity and hide its whole body from a parity test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.copy_(0.5 * scale * torch.randn(p.shape, generator=g))
            elif ".norm" in name:
                p.add_(0.25 * scale * torch.randn(p.shape, generator=g))
    return module


def check_against_official(repo):
    """Loads the official module's weights here and compares outputs and gradients."""
    sys.path.insert(0, repo)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from promptir_ref import compare_with_official
    from basicsr.models.archs.NAFNet_arch import NAFNet as Official

    for cfg, hw in [(SIDD, (64, 64)), (GOPRO, (48, 48)), (TINY, (27, 35))]:
        torch.manual_seed(0)
        theirs = perturb_(Official(**cfg), 1)
        out, grad = compare_with_official(theirs, NAFNet(cfg), torch.rand(1, 3, *hw))
        n = sum(p.numel() for p in theirs.parameters())
        print(f"width {cfg['width']}: {n} parameters, max |out diff| {out:.3g}, max |grad diff| {grad:.3g}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        check_against_official(sys.argv[1])
    else:
        for cfg in (SIDD, GOPRO, TINY):
            print(sum(p.numel() for p in NAFNet(cfg).parameters()))
