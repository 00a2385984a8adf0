"""A plain PyTorch Restormer written for this repository, on promptir_ref's blocks (which are
Restormer's: MDTA, GDFN, the two LayerNorms, the resamplers and the 3x3 stem).

It is the reference the Rust port is tested against (tests/it/parity.rs). Checked once against
the official swz30/Restormer basicsr/models/archs/restormer_arch.py at commit df766d5, class
Restormer with dual_pixel_task=False (the default; the 6-channel dual-pixel variant is not
built): the same state_dict keys and shapes, and the same output and gradients (max abs
difference 0) with the official module's weights loaded here, for the paper config at 64x64
and for TINY at 32x40, both LayerNorm types. Run `python restormer_ref.py OFFICIAL_DIR` to
repeat that check.
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from promptir_ref import (Downsample, OverlapPatchEmbed, TransformerBlock, Upsample,  # noqa: E402
                          compare_with_official, param_count, perturb_)

PAPER = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
             heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, layer_norm_type="with_bias")
TINY = dict(PAPER, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 4])


class Restormer(nn.Module):
    """`after_embed(self)` registers a derived network's modules where upstream's class does
    (AdaIR's, after the stem), so that its state_dict order is the official one too."""

    def __init__(self, cfg=PAPER, after_embed=None):
        super().__init__()
        d, nb, hd, ff, bias, kind = (cfg["dim"], cfg["num_blocks"], cfg["heads"], cfg["ffn_expansion_factor"],
                                     cfg["bias"], cfg["layer_norm_type"])
        c1, c2, c3, c4 = d, 2 * d, 4 * d, 8 * d

        def stack(n, c, h):
            return nn.Sequential(*[TransformerBlock(c, h, ff, bias, kind) for _ in range(n)])

        self.patch_embed = OverlapPatchEmbed(cfg["inp_channels"], c1, False)
        if after_embed is not None:
            after_embed(self)
        self.encoder_level1 = stack(nb[0], c1, hd[0])
        self.down1_2 = Downsample(c1)
        self.encoder_level2 = stack(nb[1], c2, hd[1])
        self.down2_3 = Downsample(c2)
        self.encoder_level3 = stack(nb[2], c3, hd[2])
        self.down3_4 = Downsample(c3)
        self.latent = stack(nb[3], c4, hd[3])
        self.up4_3 = Upsample(c4)
        self.reduce_chan_level3 = nn.Conv2d(c4, c3, 1, bias=bias)
        self.decoder_level3 = stack(nb[2], c3, hd[2])
        self.up3_2 = Upsample(c3)
        self.reduce_chan_level2 = nn.Conv2d(c3, c2, 1, bias=bias)
        self.decoder_level2 = stack(nb[1], c2, hd[1])
        self.up2_1 = Upsample(c2)
        self.decoder_level1 = stack(nb[0], c2, hd[0])
        self.refinement = stack(cfg["num_refinement_blocks"], c2, hd[0])
        self.output = nn.Conv2d(c2, cfg["out_channels"], 3, padding=1, bias=bias)

    def forward(self, x, tap=None):
        """`tap(name, features)` replaces the features after the latent ("latent") and after
        decoder levels 3 and 2 ("decoder3", "decoder2"), where AdaIR changes them."""
        tap = tap or (lambda _, f: f)
        e1 = self.encoder_level1(self.patch_embed(x))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        lat = tap("latent", self.latent(self.down3_4(e3)))
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)))
        d3 = tap("decoder3", d3)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d2 = tap("decoder2", d2)
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1))
        return self.output(self.refinement(d1)) + x


def upstream_kwargs(cfg):
    """The official constructor's keyword arguments for one of these configs."""
    kw = {k: v for k, v in cfg.items() if k != "layer_norm_type"}
    kw["LayerNorm_type"] = {"with_bias": "WithBias", "bias_free": "BiasFree"}[cfg["layer_norm_type"]]
    return kw


def check_against_official(official_dir):
    """Loads the official module's random weights here and compares outputs and gradients."""
    sys.path.insert(0, os.path.join(official_dir, "basicsr", "models", "archs"))
    import restormer_arch  # the official file (needs einops)

    bias_free = dict(TINY, layer_norm_type="bias_free", bias=True)
    for cfg, hw in [(PAPER, (64, 64)), (TINY, (32, 40)), (bias_free, (24, 16))]:
        torch.manual_seed(0)
        theirs = perturb_(restormer_arch.Restormer(**upstream_kwargs(cfg)), 1, 0.2)
        out, grad = compare_with_official(theirs, Restormer(cfg), torch.rand(1, 3, *hw))
        print(f"dim {cfg['dim']} {cfg['layer_norm_type']}: {param_count(theirs)} parameters, "
              f"max |out diff| {out:.3g}, max |grad diff| {grad:.3g}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        check_against_official(sys.argv[1])
    else:
        print(param_count(Restormer(PAPER)))
