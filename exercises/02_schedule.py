"""Exercise 2: the noise schedule gamma(t) and the sampling times (Eq. 1; Alg. 2; App. A Alg. 4).

Training corrupts the analog bits by Eq. 1, x_t = sqrt(gamma(t)) x_0 + sqrt(1 - gamma(t)) eps,
with t in [0, 1]: gamma is the fraction of signal left, falling from ~1 at t = 0 (clean mask)
to ~0 at t = 1 (pure noise). Pix2Seq-D uses the cosine schedule of Alg. 4:

    gamma(t) = cos(((t + ns) / (1 + ds)) * pi / 2) ** 2,   ns = 0.0002, ds = 0.00025

The small offsets keep gamma(0) just below 1, so that 1 - gamma(t) is never 0.
Sampling (Alg. 2, Sec. 3.3) walks from t = 1 down to 0 in `steps` steps. Step s = 0 .. steps-1
goes from t_now = 1 - s / steps to t_next = max(1 - (s + 1 + td) / steps, 0): the time
difference td ("asymmetric time intervals") makes each step aim further ahead than the step
size; on COCO the paper uses td = 2.0, which it finds near optimal (Sec. 4.1), and its Fig. 6b
favours intermediate values (about 2 to 3).

Write:

    gamma(t, ns=0.0002, ds=0.00025) -> float or tensor
        t: a Python float (return a float) or a float tensor of any shape (return a tensor of
        that shape). Use math.cos for floats and torch.cos for tensors.
    time_pairs(steps, td=1.0) -> list of (t_now, t_next) float pairs, one per step.

Hints: isinstance(t, torch.Tensor) tells the two cases apart; the square is part of the
schedule; t_next is clipped at 0, so with td > 0 the last steps all aim at t = 0.
Check:  python -m exercises.check 2
"""
import math  # noqa: F401 (for your answer)

import torch  # noqa: F401 (for your answer)


def gamma(t, ns=0.0002, ds=0.00025):
    raise NotImplementedError("exercise 2: write gamma")


def time_pairs(steps, td=1.0):
    raise NotImplementedError("exercise 2: write time_pairs")
