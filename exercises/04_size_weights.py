"""Exercise 4: loss weighting by segment size (Sec. 3.2, "Loss Weighting"; Fig. 4).

The loss is a sum over pixels, so a large segment would count far more than a small one. The
paper gives each pixel (i, j) the weight

    w_ij = 1 / c_ij ** p,     w'_ij = H * W * w_ij / sum_ij w_ij

where c_ij is the number of pixels of the segment the pixel belongs to (in its own image) and
p >= 0 (p = 0: no weighting; the paper uses p = 0.2). Normalising by H * W / sum(w) keeps the
average weight at 1, so p changes the balance between segments, not the size of the loss.
Void pixels (identity 0) are a segment too. (The official code uses c + 1 in place of c; the
project follows the paper.)

Write:

    size_weights(identity, p=0.2) -> float[B, H, W]
        identity: long[B, H, W], the identity channel of a batch of masks (0 = void). Each
        image's weights sum to H * W.

Hints: one image at a time is fine. For one image, flat = identity[b].flatten();
torch.unique(flat, return_inverse=True, return_counts=True) gives each pixel's segment size as
counts[inverse].
Check:  python -m exercises.check 4
"""
import torch  # noqa: F401 (for your answer)


def size_weights(identity, p=0.2):
    raise NotImplementedError("exercise 4: write size_weights")
