"""The noise schedule and the sampling times: App. A Alg. 4 (gamma) and Alg. 2 (asymmetric time steps).

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


def time_pairs(steps, td=1.0):
    """Alg. 2: [(t_now, t_next)] for each of `steps` iterations, with the asymmetric time
    difference td: t_now = 1 - s/steps, t_next = max(1 - (s + 1 + td)/steps, 0)."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if td < 0:
        raise ValueError(f"td must be >= 0, got {td}")
    return [(1 - s / steps, max(1 - (s + 1 + td) / steps, 0.0)) for s in range(steps)]
