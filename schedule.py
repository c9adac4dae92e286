"""Noise schedules and sampling times: App. A Alg. 4 (gamma) and Alg. 2 (asymmetric time steps).

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


def gamma_linear(t):
    """A linear schedule, 1 - t (clipped away from 0 and 1), for comparison in the exercises."""
    if isinstance(t, torch.Tensor):
        return (1 - t).clamp(1e-5, 1 - 1e-5)
    return min(max(1 - t, 1e-5), 1 - 1e-5)


def gamma_sigmoid(t, start=-3.0, end=3.0, tau=1.0):
    """A sigmoid schedule (Jabri et al., Chen 2023), normalised so gamma(0) = 1, gamma(1) = 0."""
    def sig(x):
        return torch.sigmoid(x) if isinstance(x, torch.Tensor) else 1 / (1 + math.exp(-x))
    v_start, v_end = 1 / (1 + math.exp(-start / tau)), 1 / (1 + math.exp(-end / tau))
    return (v_end - sig((t * (end - start) + start) / tau)) / (v_end - v_start)


def snr(t, schedule=gamma):
    """Signal-to-noise ratio gamma / (1 - gamma) at time t (Fig. 3: input scaling b divides it by 1/b^2)."""
    g = schedule(t)
    return g / (1 - g)


def time_pairs(steps, td=1.0):
    """Alg. 2: [(t_now, t_next)] for each of `steps` iterations, with the asymmetric time
    difference td: t_now = 1 - s/steps, t_next = max(1 - (s + 1 + td)/steps, 0)."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if td < 0:
        raise ValueError(f"td must be >= 0, got {td}")
    return [(1 - s / steps, max(1 - (s + 1 + td) / steps, 0.0)) for s in range(steps)]
