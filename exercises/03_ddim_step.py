"""Exercise 3: one DDIM step of the sampler (Sec. 3.3, Alg. 2; App. A Alg. 4).

At each step of Alg. 2 the mask decoder looks at the noisy bits x_t and predicts the clean
bits x_pred (m_pred). DDIM then moves x_t to the earlier time t_next, deterministically:

    x0     = clip(x_pred, -b, b)                                 (the clean bits are +-b)
    eps    = (x_t - sqrt(gamma_now) * x0) / sqrt(1 - gamma_now)  (the noise that x0 implies)
    x_next = sqrt(gamma_next) * x0 + sqrt(1 - gamma_next) * eps  (Eq. 1 at t_next)

with gamma_now = gamma(t_now), gamma_next = gamma(t_next), and b = scale (0.1 in the paper).
Read eps from Eq. 1 at t_now: it is the noise that would turn x0 into x_t. The clip comes
first: an x0 beyond +-b would make eps, and so every later step, wrong.

Write:

    ddim_step(x_t, x_pred, t_now, t_next, scale=0.1) -> x_next
        x_t, x_pred: float[...] of one shape; t_now, t_next: floats with 0 <= t_next <= t_now,
        t_now > 0; returns float[...], the shape of x_t.

Hints: gamma is imported below (exercise 2's answer); t_now and t_next are Python floats, so
math.sqrt(gamma(t_now)) is a float; keep these coefficients as Python floats (float64): near
t = 0, 1 - gamma(t) is about 1e-7, which a float32 tensor cannot hold accurately.
x_pred.clamp(-scale, scale) clips.
Check:  python -m exercises.check 3
"""
import math  # noqa: F401 (for your answer)

import torch  # noqa: F401 (for your answer)

from schedule import gamma  # noqa: F401 (for your answer)


def ddim_step(x_t, x_pred, t_now, t_next, scale=0.1):
    raise NotImplementedError("exercise 3: write ddim_step")
