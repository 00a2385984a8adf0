"""A plain PyTorch MoCE-IR written for this repository: a U-Net of MDTA blocks whose decoder blocks
route each image (top-k of a softmax over a pooled-feature gate plus a frequency embedding of the
latent) to experts of growing complexity: low-rank projections around a Fourier-domain
attention over zero-padded patches of 4, 8, 16 and 32 pixels. Training adds Gaussian noise to the
routing logits and returns a balance loss (importance and load, half each) averaged over the
decoder blocks.

It is the reference the Rust port is tested against (tests/it/parity.rs). Checked once against
the official eduardzamfir/MoCE-IR src/net/moce_ir.py at commit a1a6e74 (class MoCEIR with
src/options.py's moce_ir and moce_ir_s arguments; `python moce_ir_ref.py OFFICIAL_DIR` repeats
it, OFFICIAL_DIR holding upstream's moce_ir.py): the same 1,262 state_dict keys in the same order
(MoCE-IR 25,353,796 parameters, MoCE-IR-S 11,477,752), the same balance loss to 7 digits, and
outputs and gradients equal to float32 rounding (max |diff| / max |output| <= 5e-7, gradients
<= 1e-5 relative to max(their largest entry, 1); TINY in eval: exactly 0), in training mode
with upstream's noise replaced by the same given draws and in eval mode at batch 1 with zero
noise, for both paper configs at 64x64 and TINY at 32x40 (also with `with_complexity` and top 2).
The rounding differences come from memory layouts: upstream's einops LayerNorm returns
channels-last views, and convolutions pick other kernels for them.

Where this reference (and the port) differ from upstream, on purpose:
- Eval routing adds no noise (upstream draws `randn_like` noise at test time too, so its outputs
  vary from run to run); training draws it, here from `noise` when given.
- Eval routes each image to its own experts. Upstream's eval path indexes the experts with
  `top_k_indices.squeeze(0)`, right only at batch 1 (its test scripts' batch size); at batch B it
  mixes the experts chosen for all B images. Per image, both paths are upstream's training-time
  dispatch without noise.
- An expert of depth d runs once: upstream's loop recomputes `process(feats)` d times from the
  same input and keeps the last, the same value (the configs use depth 1).
- The routing logits are cast to float32, so that it also runs under autocast (upstream's
  fails there: its scatter mixes the Linear's bf16/fp16 with the softmax's float32).
- The frequency embedding's high-pass conv is trainable, as upstream's is in fact
  (`requires_grad_ = False` assigns an attribute; it does not freeze the weight).
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from promptir_ref import Attention, Downsample, FeedForward, LayerNorm, OverlapPatchEmbed, Upsample  # noqa: E402
from promptir_ref import perturb_  # noqa: E402
from adair_ref import ChanelCrossAttention  # noqa: E402

PAPER = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_dec_blocks=[2, 4, 4],
             heads=[1, 2, 4, 8], num_refinement_blocks=4, ffn_expansion_factor=2.0, layer_norm_type="with_bias",
             bias=False, rank=2, rank_type="spread", num_experts=4, topk=1, with_complexity=False,
             complexity_scale="max")
SMALL = dict(PAPER, dim=32)
TINY = dict(PAPER, dim=8, num_blocks=[1, 1, 1, 1], num_dec_blocks=[1, 1, 1], num_refinement_blocks=1)


def expert_ranks(dim, rank, rank_type, n):
    return {
        "constant": [rank] * n,
        "lin": [rank + i for i in range(n)],
        "double": [rank + 2 * i for i in range(n)],
        "exp": [rank ** (i + 1) for i in range(n)],
        "fact": [math.factorial(rank + i) for i in range(n)],
        "spread": [dim // 2 ** i for i in range(n)][::-1],
    }[rank_type]


def CrossAttention(c, heads, bias):
    """MDTA with queries from x and keys/values from y through a 7x7 depthwise conv."""
    return ChanelCrossAttention(c, heads, bias, kv_kernel=7)


class FFTAttention(nn.Module):
    """q and k multiplied in the Fourier domain of zero-padded p x p patches (a circular
    correlation per patch), normalised, gating v."""

    def __init__(self, c, patch_size):
        super().__init__()
        self.patch_size = patch_size
        self.q = nn.Conv2d(c, c, 1, bias=False)
        self.q_dwconv = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.kv = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.kv_dwconv = nn.Conv2d(2 * c, 2 * c, 7, padding=3, groups=2 * c)
        self.norm = LayerNorm(c, "with_bias")
        self.proj_out = nn.Conv2d(c, c, 1)

    def patches(self, t):
        b, c, h, w = t.shape
        p = self.patch_size
        t = F.pad(t, (0, (p - w % p) % p, 0, (p - h % p) % p))
        hp, wp = t.shape[-2] // p, t.shape[-1] // p
        return t.reshape(b, c, hp, p, wp, p).permute(0, 1, 2, 4, 3, 5)

    def forward(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        q = self.q_dwconv(self.q(x))
        k, v = self.kv_dwconv(self.kv(x)).chunk(2, dim=1)
        prod = torch.fft.rfft2(self.patches(q).float()) * torch.fft.rfft2(self.patches(k).float())
        out = torch.fft.irfft2(prod, s=(p, p))
        hp, wp = out.shape[2], out.shape[3]
        out = out.permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp * p, wp * p)[:, :, :h, :w]
        # Upstream's LayerNorm hands back a channels-last view, and proj_out's kernel for that
        # layout rounds differently: the same layout here keeps the check at exactly 0.
        return self.proj_out((self.norm(out) * v).contiguous(memory_format=torch.channels_last))


class ModExpert(nn.Module):
    def __init__(self, c, rank, patch_size):
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv2d(c, rank, 1, bias=False), nn.Conv2d(c, rank, 1, bias=False),
                                   nn.Conv2d(rank, c, 1, bias=False)])
        self.body = FFTAttention(rank, patch_size)

    def forward(self, x, shared):
        y = self.body(self.proj[0](x)) * F.silu(self.proj[1](shared))
        return self.proj[2](y) + x


class ExpertSlot(nn.Module):
    """Upstream wraps each expert in a one-element sequential (keys `experts.<i>.0.`)."""

    def __init__(self, expert):
        super().__init__()
        self.add_module("0", expert)

    def forward(self, x, shared):
        return getattr(self, "0")(x, shared)


class Routing(nn.Module):
    def __init__(self, c, freq_dim, num_experts, k, complexity, with_complexity, complexity_scale):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, num_experts, bias=False))
        self.freq_gate = nn.Linear(freq_dim, num_experts, bias=False)
        if complexity_scale == "min":
            complexity = complexity / complexity.min()
        elif complexity_scale == "max":
            complexity = complexity / complexity.max()
        self.register_buffer("complexity", complexity)
        self.k, self.num_experts, self.with_complexity = k, num_experts, with_complexity
        self.noise_std = 1.0 / num_experts

    def forward(self, x, freq_emb, noise):
        """(gates (B, E) with the top-k scores and zeros elsewhere, balance loss or 0). `noise`:
        standard normal draws (B, E), used in training only."""
        # In float32: under autocast the Linear gives bf16/fp16 logits while softmax gives
        # float32 scores, and upstream's scatter of the one into zeros like the other fails
        # (upstream trains in fp32: its Trainer sets no precision).
        logits = (self.gate(x) + self.freq_gate(freq_emb)).float()
        if not self.training:
            scores = logits.softmax(dim=-1)
            top, idx = scores.topk(self.k, dim=-1)
            return torch.zeros_like(logits).scatter(1, idx, top), 0.0
        noisy = logits + noise * self.noise_std
        top, idx = noisy.softmax(dim=-1).topk(self.k, dim=-1)
        gates = torch.zeros_like(logits).scatter(1, idx, top)
        # Importance: the squared coefficient of variation over the experts of the summed clean
        # scores, weighted by each expert's relative size when `with_complexity`.
        importance = logits.softmax(dim=-1).sum(0)
        if self.with_complexity:
            importance = importance * self.complexity
        loss_imp = (importance.std() / (importance.mean() + 1e-8)) ** 2
        # Load: the probability that each expert stays in the top k under fresh noise, given the
        # k-th largest noisy logit as the threshold.
        kth = noisy.topk(self.k, dim=-1).values[:, -1:]
        z = (kth - logits) / self.noise_std
        p_mean = (1.0 - 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))).mean(0)
        loss_load = (p_mean.std() / (p_mean.mean() + 1e-8)) ** 2
        return gates, 0.5 * loss_imp + 0.5 * loss_load


class AdapterLayer(nn.Module):
    def __init__(self, c, cfg, freq_dim):
        super().__init__()
        n = cfg["num_experts"]
        ranks = expert_ranks(c, cfg["rank"], cfg["rank_type"], n)
        self.experts = nn.ModuleList([ExpertSlot(ModExpert(c, r, 2 ** (i + 2))) for i, r in enumerate(ranks)])
        self.proj_out = nn.Conv2d(c, c, 1, bias=False)
        complexity = torch.tensor([sum(p.numel() for p in e.parameters()) for e in self.experts])
        self.routing = Routing(c, freq_dim, n, cfg["topk"], complexity, cfg["with_complexity"],
                               cfg["complexity_scale"])

    def forward(self, x, freq_emb, shared, noise):
        gates, loss = self.routing(x, freq_emb, noise)
        out = torch.zeros(x.shape, dtype=torch.float32)
        self.last_routed = []  # images per expert, for the fixtures
        for e, expert in enumerate(self.experts):
            rows = gates[:, e].nonzero().flatten()
            self.last_routed.append(rows.numel())
            if rows.numel() == 0:
                continue
            y = expert(x[rows], shared[rows]) * gates[rows, e].reshape(-1, 1, 1, 1)
            out = out.index_add(0, rows, y.float())
        return self.proj_out(out), loss


class EncoderBlock(nn.Module):
    def __init__(self, c, heads, factor, bias, kind):
        super().__init__()
        self.norms = nn.ModuleList([LayerNorm(c, kind), LayerNorm(c, kind)])
        self.mixer = Attention(c, heads, bias)
        self.ffn = FeedForward(c, factor, bias)

    def forward(self, x):
        x = x + self.mixer(self.norms[0](x))
        return x + self.ffn(self.norms[1](x))


class DecoderBlock(nn.Module):
    def __init__(self, c, heads, cfg, freq_dim):
        super().__init__()
        kind, bias, factor = cfg["layer_norm_type"], cfg["bias"], cfg["ffn_expansion_factor"]
        self.norms = nn.ModuleList([LayerNorm(c, kind), LayerNorm(c, kind)])
        self.proj = nn.ModuleList([nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)])
        self.shared = Attention(c, heads, bias)
        self.mixer = CrossAttention(c, heads, bias)
        self.ffn = FeedForward(c, factor, bias)
        self.adapter = AdapterLayer(c, cfg, freq_dim)

    def forward(self, x, freq_emb, noise):
        y = self.norms[0](x)
        shared = self.shared(self.proj[0](y))
        a, loss = self.adapter(self.proj[1](y), freq_emb, shared, noise)
        x = self.mixer(a, shared) + x
        return x + self.ffn(self.norms[1](x)), loss


class Group(nn.Module):
    """Upstream's Encoder/DecoderResidualGroup: blocks at `layers.<i>`."""

    def __init__(self, blocks):
        super().__init__()
        self.layers = nn.ModuleList(blocks)


class HighPass(nn.Module):
    """A depthwise 3x3 conv that starts as the Laplacian [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False, groups=c)
        k = -torch.ones(3, 3)
        k[1, 1] = 8.0
        with torch.no_grad():
            self.conv.weight.copy_(k.expand(c, 1, 3, 3))

    def forward(self, x):
        return self.conv(x)


class FrequencyEmbedding(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.high_conv = nn.Sequential(HighPass(c), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):
        return self.mlp(self.high_conv(x).mean(dim=(-2, -1)))


class MoCEIR(nn.Module):
    def __init__(self, cfg=PAPER):
        super().__init__()
        self.cfg = cfg
        levels, d = len(cfg["num_blocks"]), cfg["dim"]
        kind, factor = cfg["layer_norm_type"], cfg["ffn_expansion_factor"]
        dims, heads = [d * 2 ** i for i in range(levels)], cfg["heads"]

        def encoder(c, n, h):
            return Group([EncoderBlock(c, h, factor, True, kind) for _ in range(n)])

        self.patch_embed = OverlapPatchEmbed(cfg["inp_channels"], d, False)
        self.freq_embed = FrequencyEmbedding(dims[-1])
        self.enc = nn.ModuleList([nn.ModuleList([encoder(dims[i], cfg["num_blocks"][i], heads[i]), Downsample(dims[i])])
                                  for i in range(levels - 1)])
        self.latent = encoder(dims[-1], cfg["num_blocks"][-1], heads[-1])
        self.dec = nn.ModuleList()
        for i in reversed(range(levels - 1)):  # from the deepest level up
            c = dims[i]
            blocks = [DecoderBlock(c, heads[i], cfg, dims[-1]) for _ in range(cfg["num_dec_blocks"][i])]
            self.dec.append(nn.ModuleList([Upsample(2 * c), nn.Conv2d(2 * c, c, 1, bias=cfg["bias"]), Group(blocks)]))
        self.refinement = encoder(d, cfg["num_refinement_blocks"], heads[0])
        self.output = nn.Conv2d(d, cfg["out_channels"], 3, padding=1, bias=cfg["bias"])
        self.total_loss = None

    def decoder_blocks(self):
        return sum(self.cfg["num_dec_blocks"])

    def forward(self, x, noise=None):
        """Training needs `noise`: one standard normal (B, num_experts) per decoder block, in
        order (None draws them). Sets `total_loss`, the mean balance loss over those blocks."""
        feats, skips = self.patch_embed(x), []
        for group, down in self.enc:
            for b in group.layers:
                feats = b(feats)
            skips.append(feats)
            feats = down(feats)
        for b in self.latent.layers:
            feats = b(feats)
        freq_emb = self.freq_embed(feats)
        if self.training and noise is None:
            noise = [torch.randn(x.shape[0], self.cfg["num_experts"]) for _ in range(self.decoder_blocks())]
        total, j = 0.0, 0
        for up, fusion, group in self.dec:
            feats = fusion(torch.cat([up(feats), skips.pop()], dim=1))
            for b in group.layers:
                feats, loss = b(feats, freq_emb, noise[j] if self.training else None)
                total, j = total + loss, j + 1
        for b in self.refinement.layers:
            feats = b(feats)
        self.total_loss = total / self.decoder_blocks()
        return self.output(feats) + x


def upstream_kwargs(cfg):
    return dict(inp_channels=cfg["inp_channels"], out_channels=cfg["out_channels"], dim=cfg["dim"],
                levels=len(cfg["num_blocks"]), heads=cfg["heads"], num_blocks=cfg["num_blocks"],
                num_dec_blocks=cfg["num_dec_blocks"], ffn_expansion_factor=cfg["ffn_expansion_factor"],
                num_refinement_blocks=cfg["num_refinement_blocks"],
                LayerNorm_type={"with_bias": "WithBias", "bias_free": "BiasFree"}[cfg["layer_norm_type"]],
                bias=cfg["bias"], rank=cfg["rank"], num_experts=cfg["num_experts"], depth_type="constant",
                stage_depth=[1] * (len(cfg["num_blocks"]) - 1), rank_type=cfg["rank_type"], topk=cfg["topk"],
                with_complexity=cfg["with_complexity"], complexity_scale=cfg["complexity_scale"])


def check_against_official(official_dir):
    """Upstream's `randn_like` replaced by the given draws: zeros in eval, the same noise list in
    training (upstream draws one (B, E) per routing call, in decoder order)."""
    import types

    sys.path.insert(0, official_dir)
    fv = types.ModuleType("fvcore")
    fv.nn = types.ModuleType("fvcore.nn")
    fv.nn.FlopCountAnalysis = fv.nn.flop_count_table = None
    sys.modules.update({"fvcore": fv, "fvcore.nn": fv.nn})
    import moce_ir as upstream  # the official src/net/moce_ir.py (needs einops)

    for name, cfg, hw in [("paper", PAPER, (64, 64)), ("small", SMALL, (64, 64)), ("tiny", TINY, (32, 40)),
                          ("tiny+complexity", dict(TINY, with_complexity=True, topk=2), (32, 40))]:
        torch.manual_seed(0)
        theirs = perturb_(upstream.MoCEIR(**upstream_kwargs(cfg)), 1, 0.3)
        ours = MoCEIR(cfg)
        assert list(ours.state_dict()) == list(theirs.state_dict()), "keys or their order differ"
        ours.load_state_dict(theirs.state_dict())
        n = sum(p.numel() for p in theirs.parameters())
        for mode, batch in [("eval", 1), ("train", 2)]:
            x = torch.rand(batch, 3, *hw)
            noise = [torch.randn(batch, cfg["num_experts"]) for _ in range(ours.decoder_blocks())]
            draws = iter(noise)
            upstream.torch.randn_like = (lambda t: next(draws)) if mode == "train" else torch.zeros_like
            theirs.train(mode == "train")
            ours.train(mode == "train")
            for m in (theirs, ours):
                m.zero_grad()
            ya, yb = theirs(x), ours(x, noise)
            w = torch.linspace(-1, 1, ya.numel()).reshape(ya.shape)
            la, lb = (ya * w).sum() + theirs.total_loss, (yb * w).sum() + ours.total_loss
            la.backward()
            lb.backward()
            grad = 0.0  # relative to each gradient's largest entry or 1, as tests/it/parity.rs compares
            for (k, a), b in zip(theirs.named_parameters(), ours.parameters()):
                assert (a.grad is None) == (b.grad is None), k
                if a.grad is not None:
                    grad = max(grad, (a.grad - b.grad).abs().max().item() / a.grad.abs().max().clamp_min(1).item())
            out = ((ya - yb).abs().max() / ya.abs().max()).item()
            print(f"{name} {mode} at {hw}: {n} parameters, {len(theirs.state_dict())} keys, max |out diff| / max |out| "
                  f"{out:.2g}, balance {float(theirs.total_loss):.7g} vs {float(ours.total_loss):.7g}, "
                  f"max relative |grad diff| {grad:.2g}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        check_against_official(sys.argv[1])
    else:
        for cfg in (PAPER, SMALL):
            m = MoCEIR(cfg)
            print(len(m.state_dict()), sum(p.numel() for p in m.parameters()))
