"""The noise schedule and the sampling times: App. A Alg. 4 (gamma), the SNR it gives analog bits
of scale b (Sec. 3.2), and Alg. 2 (asymmetric time steps).

gamma(t) is the signal fraction of Eq. 1: x_t = sqrt(gamma(t)) x_0 + sqrt(1 - gamma(t)) eps,
falling from ~1 at t = 0 to ~0 at t = 1. Works on Python floats and on tensors.
"""
import math

import torch


def _cos(x):
    return torch.cos(x) if isinstance(x, torch.Tensor) else math.cos(x)


def gamma(t, ns=0.0002, ds=0.00025):
    """Alg. 4, the cosine schedule: cos(((t + ns) / (1 + ds)) * pi / 2) ** 2."""
    return _cos(((t + ns) / (1 + ds)) * math.pi / 2) ** 2


def snr(t, scale=0.1):
    """The signal-to-noise ratio of the analog bits at time t under Eq. 1: a bit of value +-b
    (b = scale) has signal power gamma(t) b^2 beside noise power 1 - gamma(t). Sec. 3.2 ("input
    scaling") and Fig. 3: at b = 0.1 the SNR is b^2 = 100x lower than at b = 1 at every t, so the
    mask stays hidden in the noise down to much smaller t."""
    g = gamma(t)
    return g * scale ** 2 / (1 - g)


def time_pairs(steps, td=1.0):
    """Alg. 2: [(t_now, t_next)] for each of `steps` iterations, with the asymmetric time
    difference td: t_now = 1 - s/steps, t_next = max(1 - (s + 1 + td)/steps, 0)."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if td < 0:
        raise ValueError(f"td must be >= 0, got {td}")
    return [(1 - s / steps, max(1 - (s + 1 + td) / steps, 0.0)) for s in range(steps)]
