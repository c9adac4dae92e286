"""Mask decoder of Sec. 3.1 (Fig. 2): a TransUNet conditioned on the image and on gamma(t).

Input: concat(m_t noisy analog bits, image features at the mask size [, the previous estimate of the
bits with self-conditioning] [, past masks for video])
along channels; a 1x1 conv and a group norm. As the authors' release builds it (TransUNet with
ConvUnits): going down, each level's residual block (time-conditioned by FiLM, x = silu(gn(x)(1 +
scale) + shift)) and then a 3x3 stride-2 conv, each output pushed for a skip connection (the input
too); at the bottleneck, group norm and a 1x1 conv to the transformer width, transformer blocks over
the flattened map (sin-cos positions) plus one token carrying the time embedding, each with
self-attention, cross-attention to the encoder's tokens and an MLP, then group norm and a 1x1 conv
(not residual) whose output feeds the up path; going up, two residual blocks per level, each fed
the concatenation with the last pushed tensor, then nearest upsampling and a 3x3 conv. Group norm,
SiLU and a 1x1 conv give the output: m_logits float[B, G, K, h, w] (G softmax groups of K = 2**n
entries, Sec. 3.2), or with the l2 loss the analog bits m_pred float[B, n_bits, h, w] directly.
Residual blocks return (x + shortcut) / sqrt(2), their second conv starting near zero.
cfg.dec_resample = "pool" (the tiny preset's departure) resamples without convolutions: 2x2 average
pooling going down, nearest upsampling alone going up; the skip connections stay as they are.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from encoder import call, norm, pad_same, sincos_2d, sinusoid


def time_features(g, dim, gamma_scale=1e4):
    """Sinusoidal features of gamma * 1e4 (the official decoder's scale, in float32). g: [B] ->
    [B, dim]: encoder.sinusoid, the official frequencies to the bit."""
    return sinusoid(g.float() * gamma_scale, dim)


def near_zero_(layer):
    """The official init of a layer that should start silent: Glorot-uniform at a 1e-10 variance
    scale (weights ~1e-5), bias zero."""
    nn.init.xavier_uniform_(layer.weight, gain=1e-5)
    nn.init.zeros_(layer.bias)
    return layer


class ResBlock(nn.Module):
    """Residual block, time-conditioned by FiLM after its second group norm:
    y = conv1(silu(gn(x))); y = silu(gn(y) * (1 + scale) + shift); out = (conv2(y) + short(x)) / sqrt(2)."""

    def __init__(self, c_in, c_out, t_dim):
        super().__init__()
        self.n1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(t_dim, 2 * c_out)
        self.n2, self.conv2 = norm(c_out), near_zero_(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.short = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):  # x: [B, c_in, h, w], temb: [B, t_dim]
        y = self.conv1(F.silu(self.n1(x)))
        scale, shift = self.film(temb)[:, :, None, None].chunk(2, 1)
        y = F.silu(self.n2(y) * (1 + scale) + shift)
        return (self.conv2(y) + self.short(x)) / math.sqrt(2)


class DecoderBlock(nn.Module):
    """Pre-LN transformer block at the bottleneck: self-attention, cross-attention to the image
    encoder's tokens, MLP."""

    def __init__(self, dim, heads, enc_dim, mlp_ratio=4):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, kdim=enc_dim, vdim=enc_dim, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x, tokens):  # x: [B, N, dim], tokens: [B, M, enc_dim], or None: no image (unconditional)
        y = self.ln1(x)
        x = x + self.self_attn(y, y, y, need_weights=False)[0]
        if tokens is not None:
            x = x + self.cross_attn(self.ln2(x), tokens, tokens, need_weights=False)[0]
        return x + self.mlp(self.ln3(x))


class MaskDecoder(nn.Module):
    """TransUNet. Levels of widths dec_base * dec_mults; resolution halves between levels. The time
    embedding is the official ScalarEmbedding: dec_base sinusoids, two dense layers of 4 * dec_base
    with SiLU after each. cfg: a diffusion.Config; out_channels: 2 * 2**n_class_bits (ce) or n_bits."""

    def __init__(self, cfg, out_channels):
        super().__init__()
        base, dim, t_dim = cfg.dec_base, cfg.dec_dim, 4 * cfg.dec_base
        self.t_mlp = nn.Sequential(nn.Linear(base, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim), nn.SiLU())
        widths = [base * m for m in cfg.dec_mults]
        n_masks = 1 + int(cfg.self_cond) + cfg.n_past  # m_t, its previous estimate, the past masks
        self.conv_in = nn.Conv2d(cfg.n_bits * n_masks + cfg.feat_dim, widths[0], 1)
        self.norm_in = norm(widths[0])
        skips = [widths[0]]  # channels of the pushed tensors
        if cfg.dec_resample not in ("conv", "pool"):
            raise ValueError(f"dec_resample must be 'conv' or 'pool', got {cfg.dec_resample!r}")
        conv = cfg.dec_resample == "conv"  # "pool": average-pool down, plain nearest up, no convs
        self.down, self.down_convs = nn.ModuleList(), nn.ModuleList()
        c = widths[0]
        for i, w in enumerate(widths):
            self.down.append(ResBlock(c, w, t_dim))
            c = w
            skips.append(c)
            if i < len(widths) - 1:
                if conv:
                    self.down_convs.append(nn.Conv2d(c, c, 3, 2))  # TF 'SAME' padding in forward
                skips.append(c)
        self.norm_mid_in, self.conv_mid_in = norm(c), nn.Conv2d(c, dim, 1)
        self.t_token = nn.Linear(t_dim, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, cfg.dec_heads, cfg.enc_dim) for _ in range(cfg.dec_layers))
        self.norm_mid_out, self.conv_mid_out = norm(dim), nn.Conv2d(dim, dim, 1)
        c = dim
        self.up, self.up_convs = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):  # two blocks per level, each fed a skip connection
            self.up.append(nn.ModuleList([ResBlock(c + skips.pop(), w, t_dim), ResBlock(w + skips.pop(), w, t_dim)]))
            c = w
            if i > 0 and conv:
                self.up_convs.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out, self.conv_out = norm(c), nn.Conv2d(c, out_channels, 1)
        if cfg.zero_init_out:  # the official init; False: PyTorch's default (diffusion.Config)
            near_zero_(self.conv_out)
        self.remat = False  # recompute the residual and transformer blocks in the backward pass (encoder.call)

    def forward(self, m_t, feats, tokens, g, past=None, m_prev=None):
        """m_t: [B, n_bits, h, w]; feats: [B, feat_dim, h, w]; tokens: [B, M, enc_dim];
        g: gamma(t), [B]; m_prev (self-conditioning): [B, n_bits, h, w] or None; past:
        [B, n_past * n_bits, h, w] or None  ->  [B, out_channels, h, w]."""
        temb = self.t_mlp(time_features(g, self.t_mlp[0].in_features))
        x = torch.cat([m_t, feats] + [y for y in (m_prev, past) if y is not None], 1)
        x = self.norm_in(self.conv_in(x))
        skips = [x]
        for i, block in enumerate(self.down):
            x = call(block, x, temb, remat=self.remat)
            skips.append(x)
            if i < len(self.down) - 1:
                x = self.down_convs[i](pad_same(x, 3, 2)) if self.down_convs else F.avg_pool2d(x, 2)
                skips.append(x)
        x = self.conv_mid_in(self.norm_mid_in(x))
        B, D, h, w = x.shape
        seq = x.flatten(2).transpose(1, 2) + sincos_2d(h, w, D, x.device).to(x.dtype)
        seq = torch.cat([seq, self.t_token(temb)[:, None]], 1)  # one extra token carries the time
        for block in self.blocks:
            seq = call(block, seq, tokens, remat=self.remat)
        x = seq[:, :-1].transpose(1, 2).reshape(B, D, h, w)
        x = self.conv_mid_out(self.norm_mid_out(x))
        for i, (b1, b2) in enumerate(self.up):
            x = call(b1, torch.cat([x, skips.pop()], 1), temb, remat=self.remat)
            x = call(b2, torch.cat([x, skips.pop()], 1), temb, remat=self.remat)
            if i < len(self.up) - 1:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = self.up_convs[i](x) if self.up_convs else x
        return self.conv_out(F.silu(self.norm_out(x)))
