"""Losses of Sec. 3.2: softmax cross entropy over bit vocabularies, the expected analog bits it
implies (m_pred), size weighting w = 1/c^p, and the l2 loss kept for ablation (Table 4).

Logits `m_logits: float[B, G, K, H, W]` hold G softmax groups (class, identity) of K = 2**n
entries each: a group's K base categories are the integers its n bits can spell (Sec. 3.2:
'01' = sum_k alpha_k * base_k). The paper's loss sums y * log softmax over pixels and groups;
each pixel is weighted by w' (Sec. 3.2, "Loss Weighting").
"""
import torch
import torch.nn.functional as F

from bits import int2bit


def size_weights(identity, p=0.2, offset=0):
    """w_ij = 1 / c_ij^p normalised to w'_ij = H W w_ij / sum w (Sec. 3.2).

    identity: long[B, H, W]; c is the pixel count of the pixel's segment (void, identity 0, is
    one segment too). offset: the paper's c^p with 0, the official code's (c + 1)^p with 1.
    Returns float[B, H, W]; each image's weights sum to H * W.
    """
    if identity.dim() != 3:
        raise ValueError(f"identity must be [B, H, W], got {list(identity.shape)}")
    B, H, W = identity.shape
    flat = identity.reshape(B, H * W).long().contiguous()
    s = flat.sort(1).values  # c = how many of the image's ids equal this one: the run of it in s
    c = (torch.searchsorted(s, flat, right=True) - torch.searchsorted(s, flat)).float()  # [B, H*W]
    w = (c + offset).pow(-p)
    w = w * (H * W) / w.sum(1, keepdim=True)
    return w.reshape(B, H, W)


def softmax_ce(logits, target, weights):
    """Per-pixel weighted cross entropy, summed over softmax groups.

    logits: float[B, G, K, H, W], target: long[B, H, W, G] (entries in [0, K)),
    weights: float[B, H, W]  ->  float[B, H, W].
    """
    if logits.dim() != 5 or target.shape != (logits.shape[0], *logits.shape[3:], logits.shape[1]):
        raise ValueError(f"softmax_ce: logits [B, G, K, H, W] = {list(logits.shape)} and "
                         f"target [B, H, W, G] = {list(target.shape)} do not agree")
    ce = F.cross_entropy(logits.transpose(1, 2).float(), target.permute(0, 3, 1, 2).long(), reduction="none")
    return ce.sum(1) * weights  # ce: [B, G, H, W]


def bit_table(K, device=None):
    """The bits of each base category 0..K-1: float[K, n], LSB first; K must be a power of two."""
    n = K.bit_length() - 1
    if K < 2 or 2 ** n != K:
        raise ValueError(f"a softmax group must have 2**n entries, got {K}")
    return int2bit(torch.arange(K, device=device), n).float()


def expected_bits(logits, scale=0.1):
    """m_pred: the analog bits expected under each group's softmax (Sec. 3.2).

    logits: float[B, G, K, H, W]  ->  float[B, G * n, H, W] with
    m_pred[g*n + j] = scale * (2 * sum_k softmax_k * bit_j(k) - 1); group 0 first, LSB first.
    """
    B, G, K, H, W = logits.shape
    probs = logits.float().softmax(2)
    e = torch.einsum("bgkhw,kn->bgnhw", probs, bit_table(K, logits.device))
    return (scale * (2 * e - 1)).reshape(B, G * e.shape[2], H, W)


def l2_loss(m_pred, m_bits, weights):
    """The l2 denoising loss on x0 (Table 4's baseline): mean over bits of (m_pred - m_bits)^2,
    times the size weight. m_pred, m_bits: float[B, n_bits, H, W] -> float[B, H, W]."""
    return (m_pred - m_bits).pow(2).mean(1) * weights
