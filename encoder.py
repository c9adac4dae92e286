"""Image encoder of Sec. 3.1 (Fig. 2): ResNet -> transformer encoder -> feature-pyramid merge.

images: float[B, 3, H, W]  ->  (feats: float[B, feat_dim, h, w] at the mask size,
                                tokens: float[B, N, enc_dim], the transformer output, N = H/s * W/s)
with s = 4 * stem_stride: 16 for ResNet-50's stem, 8 for the tiny preset's stride-2 stem.
As the authors' release builds it (ResNetTransformer with ResNet variant 'c4', FeaturePyramidMerge):
a ResNet-50 cut after its stride-16 stage; dropout on its features, a projection to the transformer
width and a LayerNorm; 2-D sin-cos positions on coordinates normalised to [0, 2 pi] (the same codes
at any grid size: weights trained at 256 px read the same positions at 1024 px); pre-LayerNorm
transformer encoder layers with drop-path and MLP dropout; an output LayerNorm. The pyramid merge
goes coarse to fine: the transformer output into the stride-8 map, that into the stride-4 map, one
UpsampleBlock per level at the finer map's width, then a last UpsampleBlock to the mask size with
feat_dim channels. The decoder gets `feats` as input channels and cross-attends to `tokens`
("cat+attn"). The release's 'c4' model has 12 layers (the paper's text says 6; its 94.5M
parameters are the 12-layer model).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


def norm(c):
    """GroupNorm with up to 32 groups of at least 4 channels: the most groups <= min(32, c // 4)
    that divide c (any width works; the official min(32, c // 4) wherever that divides c)."""
    return nn.GroupNorm(next(g for g in range(min(32, max(1, c // 4)), 0, -1) if c % g == 0), c)


def resnet_norm(kind, c):
    """The ResNet's normalisation: "batch" (the official, momentum 0.9 in TF's convention) or "group"."""
    if kind not in ("batch", "group"):
        raise ValueError(f"resnet_norm must be 'batch' or 'group', got {kind!r}")
    return nn.BatchNorm2d(c, momentum=0.1) if kind == "batch" else norm(c)


def pad_same(x, k, s, value=0.0):
    """TensorFlow's 'SAME' padding of x: [B, C, H, W] for a k x k window of stride s (the extra row
    and column go at the bottom and right, where PyTorch's padding= pads both sides alike)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def call(module, *args, remat=False):
    """module(*args). With remat (train.py --checkpoint-activations) and gradients on, the module's
    inner activations are not kept for the backward pass but recomputed there from its inputs
    (torch.utils.checkpoint; the random draws of dropout and drop-path are replayed): memory for
    a second forward pass of the module."""
    if remat and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)
    return module(*args)


def drop_path(x, p, training):
    """Stochastic depth: zero the whole residual branch of an example with probability p, scale
    the kept ones by 1 / (1 - p). x: [B, ...]."""
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype) < 1 - p
    return x * keep / (1 - p)


class Bottleneck(nn.Module):
    """ResNet-50's block (v1.5): 1x1 reduce, 3x3 carrying the stride, 1x1 expand (its norm starts
    at zero, so the block starts as its shortcut), plus a shortcut, projected in a stage's first block."""

    def __init__(self, c_in, width, stride, project, norm_kind):
        super().__init__()
        c_out = 4 * width
        self.conv1, self.n1 = nn.Conv2d(c_in, width, 1, bias=False), resnet_norm(norm_kind, width)
        self.conv2, self.n2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), resnet_norm(norm_kind, width)
        self.conv3, self.n3 = nn.Conv2d(width, c_out, 1, bias=False), resnet_norm(norm_kind, c_out)
        nn.init.zeros_(self.n3.weight)
        self.short = None
        if project:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), resnet_norm(norm_kind, c_out))

    def forward(self, x):
        y = F.relu(self.n1(self.conv1(x)))
        y = F.relu(self.n2(self.conv2(y)))
        y = self.n3(self.conv3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    """Stem (stride 4: 7x7 conv and 3x3 max-pool) and three bottleneck stages at strides 4, 8, 16
    (ResNet-50: widths 64/128/256, depths 3/4/6; its stride-32 stage is cut: variant 'c4').
    Returns the three stage outputs. stem_stride=2 drops the max-pool, for small images."""

    def __init__(self, widths=(64, 128, 256), depths=(3, 4, 6), stem=64, stem_stride=4, norm_kind="batch"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False), resnet_norm(norm_kind, stem), nn.ReLU())
        self.pool = stem_stride == 4
        stages, c = [], stem
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(d):
                blocks.append(Bottleneck(c, w, 2 if (j == 0 and i > 0) else 1, j == 0, norm_kind))
                c = 4 * w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.channels = [4 * w for w in widths]

    def forward(self, x):  # x: [B, 3, H, W]
        x = self.stem(x)
        if self.pool:
            x = F.max_pool2d(pad_same(x, 3, 2, -math.inf), 3, 2)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs  # strides 4, 8, 16 (2, 4, 8 with stem_stride=2)


def sinusoid(x, dim):
    """The official sin-cos features of values x: float[n] -> float[n, dim], the sines of x f_k for
    dim / 2 frequencies f_k = 1 / 10000^(2k / dim), then the cosines. Computed in float32 as the
    authors' TensorFlow code does, a power and then a reciprocal: the decoder's time features take
    angles up to 1e4 radians, where one ulp of a frequency moves a feature by ~5e-4."""
    k2 = torch.arange(0, dim - dim % 2, 2, device=x.device, dtype=torch.float32)
    freq = 1 / torch.pow(torch.tensor(10000.0, device=x.device), k2 / dim)
    a = x.float()[:, None] * freq
    return torch.cat([a.sin(), a.cos()], 1)


def sincos_1d(n, dim, device=None):
    """1-D sin-cos codes of n positions at coordinates normalised to [0, 2 pi]: float[n, dim]."""
    coords = torch.arange(n, device=device, dtype=torch.float32) / max(n - 1, 1) * 6.2831852
    return sinusoid(coords, dim)


def sincos_2d(h, w, dim, device=None):
    """2-D sin-cos positions of an h x w grid, rows first: float[h * w, dim] (dim divisible by 4),
    the row's dim / 2 codes, then the column's; the first and last row (column) get the same codes
    whatever the grid size. A grid of one row or column gets the 1-D codes of its h * w positions."""
    if dim % 4:
        raise ValueError(f"sin-cos positions need a width divisible by 4, got {dim}")
    if h == 1 or w == 1:
        return sincos_1d(h * w, dim, device)
    y, x = sincos_1d(h, dim // 2, device), sincos_1d(w, dim // 2, device)
    return torch.cat([y[:, None].expand(h, w, -1), x[None].expand(h, w, -1)], -1).reshape(h * w, dim)


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer encoder layer: x + dp(attn(ln(x))); x + dp(mlp(ln(x))), with
    drop-path dp and dropout between the MLP's two layers."""

    def __init__(self, dim, heads, mlp, drop_path=0.0, drop_units=0.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(drop_units), nn.Linear(mlp, dim))
        self.drop_path = drop_path

    def forward(self, x):  # x: [B, N, dim]
        y = self.ln1(x)
        x = x + drop_path(self.attn(y, y, y, need_weights=False)[0], self.drop_path, self.training)
        return x + drop_path(self.mlp(self.ln2(x)), self.drop_path, self.training)


class UpsampleBlock(nn.Module):
    """One step of the pyramid merge: y = silu(gn(conv1x1(x_lr))) at the coarse map's size, to the
    fine size (nearest), plus x_hr (when given), then silu(gn(conv3x3(.))) with `dim` channels.
    x_lr: [B, c_lr, h, w]; x_hr: [B, dim, H, W] or None  ->  [B, dim, H, W]."""

    def __init__(self, c_lr, dim):
        super().__init__()
        self.conv1, self.n1 = nn.Conv2d(c_lr, dim, 1), norm(dim)
        self.conv2, self.n2 = nn.Conv2d(dim, dim, 3, padding=1), norm(dim)

    def forward(self, x_lr, x_hr=None, size=None):
        y = F.silu(self.n1(self.conv1(x_lr)))
        y = F.interpolate(y, size=tuple(size), mode="nearest") if tuple(y.shape[-2:]) != tuple(size) else y
        return F.silu(self.n2(self.conv2(y if x_hr is None else x_hr + y)))


class ImageEncoder(nn.Module):
    """ResNet + transformer encoder + feature-pyramid merge up to the mask resolution.
    cfg: a diffusion.Config (its resnet_*, enc_* and feat_dim fields)."""

    def __init__(self, cfg):
        super().__init__()
        self.resnet = ResNet(cfg.resnet_widths, cfg.resnet_depths, cfg.resnet_stem, cfg.resnet_stem_stride,
                             cfg.resnet_norm)
        c4, c8, c16 = self.resnet.channels
        self.drop = nn.Dropout(cfg.enc_drop_units)
        self.proj, self.proj_ln = nn.Linear(c16, cfg.enc_dim), nn.LayerNorm(cfg.enc_dim, eps=1e-6)
        self.layers = nn.ModuleList(EncoderLayer(cfg.enc_dim, cfg.enc_heads, cfg.enc_mlp, cfg.enc_drop_path,
                                                 cfg.enc_drop_units) for _ in range(cfg.enc_layers))
        self.ln = nn.LayerNorm(cfg.enc_dim, eps=1e-6)
        # FeaturePyramidMerge: tokens -> stride 8 (c8 wide), -> stride 4 (c4 wide), -> mask size (feat_dim)
        self.up8, self.up4 = UpsampleBlock(cfg.enc_dim, c8), UpsampleBlock(c8, c4)
        self.up_out = UpsampleBlock(c4, cfg.feat_dim)
        self.remat = False  # recompute the transformer layers in the backward pass (encoder.call)

    def forward(self, images, mask_size):
        """images: [B, 3, H, W] (H, W multiples of s = 4 * stem_stride); mask_size: (h, w), at least
        the stride-4 (stride-2) map's size."""
        f4, f8, f16 = self.resnet(images)  # [B, c, H/s * 4, ...], [.. H/s * 2 ..], [B, c16, H/s, W/s]
        B, _, h16, w16 = f16.shape
        x = self.proj_ln(self.proj(self.drop(f16.flatten(2).transpose(1, 2))))  # [B, N, enc_dim]
        tokens = x + sincos_2d(h16, w16, x.shape[-1], x.device).to(x.dtype)
        for layer in self.layers:
            tokens = call(layer, tokens, remat=self.remat)
        tokens = self.ln(tokens)
        p = tokens.transpose(1, 2).reshape(B, tokens.shape[-1], h16, w16)
        p = self.up8(p, f8, f8.shape[-2:])
        p = self.up4(p, f4, f4.shape[-2:])
        return self.up_out(p, None, mask_size), tokens
