"""A plain PyTorch PromptIR written for this repository from the architecture notes.

It is the reference the Rust port is tested against (tests/parity.rs). It follows the official
network's math operation by operation in the straightforward (upstream) form: reshape-based
LayerNorm, repeat-and-sum prompt mixing, chunk + GELU. With `with_unused=True` it also registers
the six modules the official model defines but never runs, so its state_dict has exactly the
548 official keys at dim 48 (checked against the official code, see tests/parity.rs).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PAPER = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
             heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, layer_norm_type="with_bias",
             prompt_len=5, prompt_dims=[64, 128, 320], prompt_sizes=[64, 32, 16])
TINY = dict(PAPER, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 4],
            prompt_len=3, prompt_dims=[8, 16, 32], prompt_sizes=[16, 8, 4])


class _NormBody(nn.Module):
    def __init__(self, c, with_bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c)) if with_bias else None

    def forward(self, x3):  # (b, hw, c)
        mu = x3.mean(-1, keepdim=True)
        var = x3.var(-1, keepdim=True, unbiased=False)
        if self.bias is None:
            return x3 / torch.sqrt(var + 1e-5) * self.weight
        return (x3 - mu) / torch.sqrt(var + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    def __init__(self, c, kind):
        super().__init__()
        self.body = _NormBody(c, kind == "with_bias")

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.body(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)


class Attention(nn.Module):
    def __init__(self, c, heads, bias):
        super().__init__()
        self.num_heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=bias)
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)

        def split(t):
            return t.reshape(b, self.num_heads, c // self.num_heads, h * w)

        q, k, v = F.normalize(split(q), dim=-1), F.normalize(split(k), dim=-1), split(v)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class FeedForward(nn.Module):
    def __init__(self, c, factor, bias):
        super().__init__()
        hidden = int(c * factor)
        self.project_in = nn.Conv2d(c, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, c, 1, bias=bias)

    def forward(self, x):
        a, g = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * g)


class TransformerBlock(nn.Module):
    def __init__(self, c, heads, factor, bias, kind):
        super().__init__()
        self.norm1 = LayerNorm(c, kind)
        self.attn = Attention(c, heads, bias)
        self.norm2 = LayerNorm(c, kind)
        self.ffn = FeedForward(c, factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin, c, bias):
        super().__init__()
        self.proj = nn.Conv2d(cin, c, 3, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


class PromptGenBlock(nn.Module):
    def __init__(self, prompt_dim, prompt_len, prompt_size, lin_dim):
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x):
        b, _, h, w = x.shape
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)
        # The upstream form: weights (B, L, 1, 1, 1) times the batch-repeated prompts, summed over L.
        prompts = weights[:, :, None, None, None] * self.prompt_param.repeat(b, 1, 1, 1, 1)
        prompt = prompts.sum(dim=1)
        prompt = F.interpolate(prompt, (h, w), mode="bilinear")
        return self.conv3x3(prompt)


class PromptIR(nn.Module):
    def __init__(self, cfg=PAPER, with_unused=False):
        super().__init__()
        d, nb, hd, ff, bias, kind = (cfg["dim"], cfg["num_blocks"], cfg["heads"], cfg["ffn_expansion_factor"],
                                     cfg["bias"], cfg["layer_norm_type"])
        p1, p2, p3 = cfg["prompt_dims"]
        s1, s2, s3 = cfg["prompt_sizes"]
        L = cfg["prompt_len"]
        c1, c2, c3, c4 = d, 2 * d, 4 * d, 8 * d

        def stack(n, c, h):
            return nn.Sequential(*[TransformerBlock(c, h, ff, bias, kind) for _ in range(n)])

        # Registration order follows the official module so state_dict order matches too.
        self.patch_embed = OverlapPatchEmbed(cfg["inp_channels"], c1, False)  # upstream: its default bias
        self.prompt1 = PromptGenBlock(p1, L, s1, c2)
        self.prompt2 = PromptGenBlock(p2, L, s2, c3)
        self.prompt3 = PromptGenBlock(p3, L, s3, c4)
        if with_unused:
            self.chnl_reduce1 = nn.Conv2d(64, 64, 1, bias=bias)
            self.chnl_reduce2 = nn.Conv2d(128, 128, 1, bias=bias)
            self.chnl_reduce3 = nn.Conv2d(320, 256, 1, bias=bias)
            self.reduce_noise_channel_1 = nn.Conv2d(d + 64, d, 1, bias=bias)
        self.encoder_level1 = stack(nb[0], c1, hd[0])
        self.down1_2 = Downsample(c1)
        if with_unused:
            self.reduce_noise_channel_2 = nn.Conv2d(2 * d + 128, 2 * d, 1, bias=bias)
        self.encoder_level2 = stack(nb[1], c2, hd[1])
        self.down2_3 = Downsample(c2)
        if with_unused:
            self.reduce_noise_channel_3 = nn.Conv2d(4 * d + 256, 4 * d, 1, bias=bias)
        self.encoder_level3 = stack(nb[2], c3, hd[2])
        self.down3_4 = Downsample(c3)
        self.latent = stack(nb[3], c4, hd[3])
        self.up4_3 = Upsample(c3)
        self.reduce_chan_level3 = nn.Conv2d(c2 + c3, c3, 1, bias=bias)
        self.noise_level3 = TransformerBlock(c4 + p3, hd[2], ff, bias, kind)
        self.reduce_noise_level3 = nn.Conv2d(c4 + p3, c3, 1, bias=bias)
        self.decoder_level3 = stack(nb[2], c3, hd[2])
        self.up3_2 = Upsample(c3)
        self.reduce_chan_level2 = nn.Conv2d(c2 + c2, c2, 1, bias=bias)
        self.noise_level2 = TransformerBlock(c3 + p2, hd[2], ff, bias, kind)
        self.reduce_noise_level2 = nn.Conv2d(c3 + p2, c3, 1, bias=bias)
        self.decoder_level2 = stack(nb[1], c2, hd[1])
        self.up2_1 = Upsample(c2)
        self.noise_level1 = TransformerBlock(c2 + p1, hd[2], ff, bias, kind)
        self.reduce_noise_level1 = nn.Conv2d(c2 + p1, c2, 1, bias=bias)
        self.decoder_level1 = stack(nb[0], c2, hd[0])
        self.refinement = stack(cfg["num_refinement_blocks"], c2, hd[0])
        self.output = nn.Conv2d(c2, cfg["out_channels"], 3, padding=1, bias=bias)

    def forward(self, x):
        e1 = self.encoder_level1(self.patch_embed(x))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        lat = self.latent(self.down3_4(e3))
        lat = self.reduce_noise_level3(self.noise_level3(torch.cat([lat, self.prompt3(lat)], 1)))
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)))
        d3 = self.reduce_noise_level2(self.noise_level2(torch.cat([d3, self.prompt2(d3)], 1)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)))
        d2 = self.reduce_noise_level1(self.noise_level1(torch.cat([d2, self.prompt1(d2)], 1)))
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1))
        return self.output(self.refinement(d1)) + x


def perturb_(module, seed, scale=1.0):
    """Moves every parameter away from its init (norm weights 1, biases 0, temperature 1), so a
    parity test cannot pass by accident when one of them is ignored."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("temperature") or ".body." in name:
                p.add_(0.25 * scale * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.add_(0.05 * scale * torch.randn(p.shape, generator=g))
    return module


def param_count(module):
    return sum(p.numel() for p in module.parameters())


def compare_with_official(theirs, ours, x):
    """Loads the official module's weights into `ours` (the keys must be the same, in the same
    order) and returns the largest differences of output and of parameter gradient on `x`; a
    parameter must get a gradient in both or in neither."""
    assert list(ours.state_dict()) == list(theirs.state_dict()), "keys or their order differ"
    ours.load_state_dict(theirs.state_dict())
    ya, yb = theirs(x), ours(x)
    w = torch.linspace(-1, 1, ya.numel()).reshape(ya.shape)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    grad = 0.0
    for (name, a), b in zip(theirs.named_parameters(), ours.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            grad = max(grad, (a.grad - b.grad).abs().max().item())
    return (ya - yb).abs().max().item(), grad


if __name__ == "__main__":
    m = PromptIR(PAPER, with_unused=True)
    print(len(m.state_dict()), param_count(m))
    print(math.isclose(param_count(PromptIR(PAPER)), 35_376_967))
