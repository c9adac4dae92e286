"""Mask decoder of Sec. 3.1 (Fig. 2): a TransUNet conditioned on the image and on gamma(t).

Input: concat(m_t noisy analog bits, image features at the mask size [, past masks for video])
along channels. A U-Net of residual blocks, time-conditioned by FiLM (x = silu(gn(x)(1 + scale) + shift)),
goes down; at the bottleneck, transformer blocks run over the flattened map plus one token
carrying the time embedding, each with self-attention, cross-attention to the encoder's tokens,
and an MLP; the U-Net comes back up with skip connections; group norm, SiLU and a 1x1 conv give
the output: m_logits float[B, G, K, h, w] (G softmax groups of K = 2**n entries, Sec. 3.2), or
with the l2 loss the analog bits m_pred float[B, n_bits, h, w] directly.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from encoder import norm, sincos_2d


T_FEATURES = 128  # sinusoids of gamma fed to the time MLP (SPEC: 128 -> 512 -> 512)


def time_features(g, dim=T_FEATURES, gamma_scale=1e4):
    """Sinusoidal features of gamma * 1e4 (the official decoder's scale). g: [B] -> [B, dim]."""
    half = dim // 2
    freq = torch.exp(-math.log(10000) * torch.arange(half, device=g.device, dtype=torch.float32) / half)
    a = (g.float() * gamma_scale)[:, None] * freq
    return torch.cat([a.sin(), a.cos()], 1)


class ResBlock(nn.Module):
    """Residual block, time-conditioned by FiLM after its second group norm (SPEC):
    y = conv1(silu(gn(x))); y = silu(gn(y) * (1 + scale) + shift); out = short(x) + conv2(y)."""

    def __init__(self, c_in, c_out, t_dim):
        super().__init__()
        self.n1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(t_dim, 2 * c_out)
        self.n2, self.conv2 = norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.short = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):  # x: [B, c_in, h, w], temb: [B, t_dim]
        y = self.conv1(F.silu(self.n1(x)))
        scale, shift = self.film(temb)[:, :, None, None].chunk(2, 1)
        y = F.silu(self.n2(y) * (1 + scale) + shift)
        return self.short(x) + self.conv2(y)


class DecoderBlock(nn.Module):
    """Pre-LN transformer block at the bottleneck: self-attention, cross-attention to the image
    encoder's tokens, MLP."""

    def __init__(self, dim, heads, enc_dim, mlp_ratio=4):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, kdim=enc_dim, vdim=enc_dim, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x, tokens):  # x: [B, N, dim], tokens: [B, M, enc_dim]
        y = self.ln1(x)
        x = x + self.self_attn(y, y, y, need_weights=False)[0]
        x = x + self.cross_attn(self.ln2(x), tokens, tokens, need_weights=False)[0]
        return x + self.mlp(self.ln3(x))


class MaskDecoder(nn.Module):
    """TransUNet. Levels of widths base * mults; resolution halves between levels."""

    def __init__(self, n_bits, feat_dim, enc_dim, out_channels, base=128, mults=(1, 1, 2, 2),
                 dim=512, layers=6, heads=8, n_past=0, t_dim=512):
        super().__init__()
        self.t_mlp = nn.Sequential(nn.Linear(T_FEATURES, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        widths = [base * m for m in mults]
        self.conv_in = nn.Conv2d(n_bits * (1 + n_past) + feat_dim, widths[0], 1)
        self.down = nn.ModuleList()
        c = widths[0]
        for w in widths:
            self.down.append(ResBlock(c, w, t_dim))
            c = w
        self.proj_in, self.t_token = nn.Linear(c, dim), nn.Linear(t_dim, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, enc_dim) for _ in range(layers))
        self.proj_out = nn.Linear(dim, c)
        self.up = nn.ModuleList()
        for w in reversed(widths):  # two blocks per level going up, each fed a skip connection
            self.up.append(nn.ModuleList([ResBlock(c + w, w, t_dim), ResBlock(w + w, w, t_dim)]))
            c = w
        # The official code initialises conv_out near zero; PyTorch's default init learns several
        # times faster in a short CPU run (measured: identity accuracy 0.3 vs 0.8 after 40 steps).
        self.norm_out, self.conv_out = norm(c), nn.Conv2d(c, out_channels, 1)

    def forward(self, m_t, feats, tokens, g, past=None):
        """m_t: [B, n_bits, h, w]; feats: [B, feat_dim, h, w]; tokens: [B, M, enc_dim];
        g: gamma(t), [B]; past: [B, n_past * n_bits, h, w] or None  ->  [B, out_channels, h, w]."""
        temb = self.t_mlp(time_features(g))
        x = torch.cat([m_t, feats] + ([past] if past is not None else []), 1)
        x = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            x = block(x, temb)
            skips += [x, x]
        B, C, h, w = x.shape
        seq = self.proj_in(x.flatten(2).transpose(1, 2)) + sincos_2d(h, w, self.proj_in.out_features, x.device)
        seq = torch.cat([self.t_token(temb)[:, None], seq], 1)  # one extra token carries the time
        for block in self.blocks:
            seq = block(seq, tokens)
        x = x + self.proj_out(seq[:, 1:]).transpose(1, 2).reshape(B, C, h, w)
        for i, (b1, b2) in enumerate(self.up):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = b1(torch.cat([x, skips.pop()], 1), temb)
            x = b2(torch.cat([x, skips.pop()], 1), temb)
        return self.conv_out(F.silu(self.norm_out(x)))
