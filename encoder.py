"""Image encoder of Sec. 3.1 (Fig. 2): ResNet -> transformer encoder -> multi-scale upsampling.

images: float[B, 3, H, W]  ->  (feats: float[B, feat_dim, h, w] at the mask size,
                                tokens: float[B, N, dim], the transformer output, N = H/s * W/s)
with s = 4 * stem_stride: 16 for the official ResNet-50 stem, 8 for the tiny preset's stride-2 stem.
The official model cuts a ResNet-50 after its stride-16 stage, projects to the transformer width,
adds 2-D sin-cos positions, runs pre-LayerNorm transformer encoder layers, then merges the stride-4
and stride-8 ResNet maps with the transformer output top-down (a feature pyramid) and upsamples
(nearest) to the mask resolution. The decoder gets `feats` as input channels and cross-attends to
`tokens` (SPEC, "cat+attn").
Departure: GroupNorm replaces BatchNorm in the ResNet, so results do not depend on how a global
batch is split across processes (DDP) and no running statistics need averaging in the EMA.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

def norm(c):
    """GroupNorm with up to 32 groups of at least 4 channels: the most groups <= min(32, c // 4)
    that divide c (any width works)."""
    return nn.GroupNorm(next(g for g in range(min(32, max(1, c // 4)), 0, -1) if c % g == 0), c)


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand, plus a shortcut."""

    def __init__(self, c_in, width, stride):
        super().__init__()
        c_out = 4 * width
        self.conv1, self.n1 = nn.Conv2d(c_in, width, 1, bias=False), norm(width)
        self.conv2, self.n2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), norm(width)
        self.conv3, self.n3 = nn.Conv2d(width, c_out, 1, bias=False), norm(c_out)
        nn.init.zeros_(self.n3.weight)  # each block starts as the identity
        self.short = None
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)))
        y = F.relu(self.n2(self.conv2(y)))
        y = self.n3(self.conv3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    """Stem (stride 4: 7x7 conv and max-pool) and three bottleneck stages at strides 4, 8, 16
    (ResNet-50: widths 64/128/256, depths 3/4/6; its stride-32 stage is cut). Returns the three
    stage outputs. stem_stride=2 drops the max-pool, for small images (strides 2, 4, 8)."""

    def __init__(self, widths=(64, 128, 256), depths=(3, 4, 6), stem=64, stem_stride=4):
        super().__init__()
        pool = [nn.MaxPool2d(3, 2, 1)] if stem_stride == 4 else []
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False), norm(stem), nn.ReLU(), *pool)
        stages, c = [], stem
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(d):
                blocks.append(Bottleneck(c, w, 2 if (j == 0 and i > 0) else 1))
                c = 4 * w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.channels = [4 * w for w in widths]

    def forward(self, x):  # x: [B, 3, H, W]
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs  # strides 4, 8, 16 (2, 4, 8 with stem_stride=2)


def sincos_2d(h, w, dim, device=None):
    """2-D sine-cosine positions: float[h * w, dim] (dim divisible by 4), rows first."""
    if dim % 4:
        raise ValueError(f"sin-cos positions need a width divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                          torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    freq = 1.0 / 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim // 4))
    y, x = y.reshape(-1, 1) * freq, x.reshape(-1, 1) * freq
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], 1)


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer encoder layer: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):  # x: [B, N, dim]
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ImageEncoder(nn.Module):
    """ResNet + transformer encoder + feature-pyramid merge up to the mask resolution."""

    def __init__(self, widths=(64, 128, 256), depths=(3, 4, 6), stem=64, dim=512, layers=6,
                 heads=16, mlp=2048, feat_dim=256, stem_stride=4):
        super().__init__()
        self.resnet = ResNet(widths, depths, stem, stem_stride)
        c4, c8, c16 = self.resnet.channels
        self.proj = nn.Conv2d(c16, dim, 1)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, mlp) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        # Feature pyramid: lateral 1x1 convs into feat_dim, top-down sum, 3x3 smoothing.
        self.lat16, self.lat8, self.lat4 = (nn.Conv2d(c, feat_dim, 1) for c in (dim, c8, c4))
        self.smooth8 = nn.Conv2d(feat_dim, feat_dim, 3, padding=1)
        self.smooth4 = nn.Conv2d(feat_dim, feat_dim, 3, padding=1)

    def forward(self, images, mask_size):
        """images: [B, 3, H, W] (H, W multiples of s = 4 * stem_stride); mask_size: (h, w)."""
        f4, f8, f16 = self.resnet(images)
        x = self.proj(f16)  # [B, dim, H/s, W/s] (f4, f8, f16: s/4, s/2, s; s = 16 officially)
        B, D, h16, w16 = x.shape
        tokens = x.flatten(2).transpose(1, 2) + sincos_2d(h16, w16, D, x.device)
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.ln(tokens)  # [B, N, dim]
        p = self.lat16(tokens.transpose(1, 2).reshape(B, D, h16, w16))
        p = self.smooth8(F.interpolate(p, size=f8.shape[-2:], mode="nearest") + self.lat8(f8))
        p = self.smooth4(F.interpolate(p, size=f4.shape[-2:], mode="nearest") + self.lat4(f4))
        feats = F.interpolate(F.silu(p), size=tuple(mask_size), mode="nearest")
        return feats, tokens
