"""Exercise 5: analog bits from softmax logits (Sec. 3.2, "Softmax Cross Entropy Loss").

Instead of predicting n analog bits directly, the decoder predicts logits over the K = 2**n
integers those bits can spell (one softmax for the class bits, one for the identity bits).
The cross entropy trains the logits; the sampler still needs analog bits m_pred, so they are
the expected bits under the softmax: with probabilities q_k = softmax(logits)_k,

    e_j = sum_k q_k * bit_j(k)          (the probability that bit j is 1)
    m_pred_j = scale * (2 * e_j - 1)    (shifted from [0, 1] to [-b, b], like the input bits)

For example, with n = 2 and all the mass on k = 1 ('01' written LSB first as [1, 0]),
e = [1, 0] and m_pred = [+b, -b].

Write:

    expected_bits(logits, scale=0.1) -> m_pred
        logits: float[B, G, K, H, W]: G softmax groups (class, identity) of K = 2**n entries.
        Returns float[B, G * n, H, W]: group 0's n bits first, then group 1's, ...; within a
        group least significant bit first (Alg. 3).

Hints: softmax over dim 2; the [K, n] table of bits is int2bit(torch.arange(K), n) from
bits.py (exercise 1); torch.einsum("bgkhw,kn->bgnhw", q, table) sums over k; n = K.bit_length() - 1.
Check:  python -m exercises.check 5
"""
import torch  # noqa: F401 (for your answer)

from bits import int2bit  # noqa: F401 (for your answer)


def expected_bits(logits, scale=0.1):
    raise NotImplementedError("exercise 5: write expected_bits")
