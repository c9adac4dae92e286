"""Identities are names (Sec. 2): a segment's identity only says which pixels belong together, so
any renaming of a mask's identities is the same mask.

permute_identities()  training draws a fresh random naming on every draw, so that the model
                      cannot learn particular ids
majority_vote()       post-processing of the official code: every identity takes the class most of
                      its pixels carry; small segments become void
match_identities()    inpainting: the renaming of known identities that agrees best with a prediction
rename()              apply a renaming
class_agnostic()      every segment one category, as class-agnostic PQ scores (LDMSeg's)

Masks are long[..., h, w, 2]: channel 0 the class (0 void), channel 1 the identity (0 void).
"""
import torch


def permute_identities(mask, generator=None):
    """A fresh random permutation of the identities 1..N of one mask (long[h, w, 2], torch)."""
    n = int(mask[..., 1].max())
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(n, generator=generator)])
    return torch.stack([mask[..., 0], perm[mask[..., 1]]], -1)


def majority_vote(mask, n_classes, min_pixels=0):
    """Post-processing of the official code. mask: long[B, h, w, 2] -> long[B, h, w, 2].

    Classes above n_classes are clamped to it; every identity takes the class most of its pixels
    carry; identities with fewer than min_pixels pixels, identity 0, and identities whose
    majority class is void (0) become void (0, 0)."""
    B, n = mask.shape[0], mask.shape[1] * mask.shape[2]
    cls, ids = mask[..., 0].clamp(0, n_classes).reshape(B, n), mask[..., 1].reshape(B, n)
    n_ids = int(ids.max()) + 1 if ids.numel() else 1
    C = n_classes + 1
    key = (torch.arange(B, device=mask.device)[:, None] * n_ids + ids) * C + cls
    votes = torch.bincount(key.reshape(-1), minlength=B * n_ids * C).view(B, n_ids, C)
    winner, size = votes.argmax(-1), votes.sum(-1)  # [B, n_ids]
    winner[(size < min_pixels) | (winner == 0)] = 0
    winner[:, 0] = 0
    new_cls = torch.gather(winner, 1, ids)
    out = torch.stack([new_cls, torch.where(new_cls > 0, ids, 0)], -1)
    return out.view(mask.shape)


def match_identities(pred_ids, known_ids, region, first):
    """Inpainting: a renaming of identities, known -> the prediction's, that agrees best with pred.

    pred_ids, known_ids: long[B, h, w] in 0..K-1; region: bool[B, h, w] (the known pixels);
    first: long[B, K], known identity k's first known pixel in raster order (h*w if none).
    Returns pi long[B, K], a permutation of 0..K-1 with pi[:, 0] = 0. Greedy: the (pred, known)
    pair sharing the most known pixels is matched first (ties: the known segment that starts
    first, then the smaller pred id, so that the result does not depend on the known names);
    unmatched known segments take, in order of their first pixel, the pred ids that pred does
    not use, so that they do not merge with a segment pred did not put there."""
    B, K = pred_ids.shape[0], first.shape[1]
    dev = pred_ids.device
    rows = torch.arange(B, device=dev)
    r = region & (pred_ids > 0) & (known_ids > 0)
    key = (rows.view(-1, 1, 1) * K + pred_ids) * K + known_ids
    count = torch.bincount(key[r], minlength=B * K * K).view(B, K, K)
    count[:, 0], count[:, :, 0] = 0, 0
    rank = first.argsort(dim=1, stable=True).argsort(1)  # known id -> its place in order of first pixel
    ids = torch.arange(K, device=dev)
    score = (count * K + (K - 1 - rank)[:, None, :]) * K + (K - 1 - ids)[None, :, None]
    score[count == 0] = -1
    pi = torch.full((B, K), -1, dtype=torch.long, device=dev)
    pi[:, 0] = 0
    for _ in range(K - 1):
        best, at = score.flatten(1).max(1)
        ok = best >= 0
        if not ok.any():
            break
        a, k = (at // K)[ok], (at % K)[ok]
        pi[rows[ok], k] = a
        score[rows[ok], a, :] = -1
        score[rows[ok], :, k] = -1
    in_pred = torch.zeros(B, K, dtype=torch.bool, device=dev)
    in_pred[rows.view(-1, 1), pred_ids.flatten(1)] = True
    used = torch.zeros(B, K, dtype=torch.bool, device=dev)
    used.scatter_(1, pi.clamp(min=0), True)
    known_order = ((pi >= 0).long() * K + rank).argsort(dim=1, stable=True)  # unmatched first
    pred_order = (used.long() * 2 * K + in_pred.long() * K + ids).argsort(dim=1, stable=True)  # unused first
    fill = pi.gather(1, known_order) < 0  # as many as unused pred ids, both at the front
    pi[rows.view(-1, 1).expand(B, K)[fill], known_order[fill]] = pred_order[fill]
    return pi


def rename(mask, pi):
    """mask: long[B, h, w, 2] with its identities replaced by pi[b, identity] (pi: long[B, K])."""
    ids = pi.gather(1, mask[..., 1].flatten(1)).view(mask.shape[:-1])
    return torch.stack([mask[..., 0], ids], -1)


def class_agnostic(mask):
    """long[..., 2] -> long[..., 2]: each segment (class, identity pair, neither 0, both < 256)
    becomes (1, class * 256 + identity), a distinct identity; void stays (0, 0)."""
    seg = (mask[..., 0] > 0) & (mask[..., 1] > 0)
    return torch.stack([seg.long(), torch.where(seg, mask[..., 0] * 256 + mask[..., 1], 0)], -1)
