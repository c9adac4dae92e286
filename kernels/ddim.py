"""Fused DDIM step (App. A Alg. 4), the update of the sampling loop of Alg. 2.

    x0     = clip(x_pred, -b, b)
    eps    = (x_t - sqrt(g_now) x0) / sqrt(1 - g_now)
    x_next = sqrt(g_next) x0 + sqrt(1 - g_next) eps

With g = gamma(t) this is x_next = alpha * x_t + beta * x0 with host-side float64 coefficients
    alpha = sqrt((1 - g_next) / (1 - g_now)),   beta = sqrt(g_next) - alpha * sqrt(g_now),
so the kernel is one clip, one multiply and one fused multiply-add per element. (g_next == g_now
gives alpha = 1, beta = 0 exactly: x_next = x_t.) Computing alpha and beta once in float64 also
avoids the reference's fp32 cancellation in eps when g_now is close to 1 (t_now near 0).

Memory traffic per element (float32): unfused (diffusion.ddim_step): clamp, mul, sub, div, mul,
mul, add: 7 kernels, 9 reads + 7 writes = 64 B. Fused: read x_t and x_pred, write x_next: 12 B.
"""
import math

import torch
import triton
import triton.language as tl

from schedule import gamma


@triton.jit
def ddim_step_kernel(x_t_ptr, x_pred_ptr, x_next_ptr, N, alpha, beta, scale, BLOCK: tl.constexpr):
    # each program streams BLOCK consecutive elements; int64 offsets for tensors over 2**31
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < N
    x_t = tl.load(x_t_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    x0 = tl.load(x_pred_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    x0 = tl.minimum(tl.maximum(x0, -scale), scale)
    x_next = alpha * x_t + beta * x0
    tl.store(x_next_ptr + offs, x_next.to(x_next_ptr.dtype.element_ty), mask=valid)


BLOCK = 2048


def ddim_step(x_t, x_pred, t_now, t_next, scale=0.1):
    """Alg. 4. x_t, x_pred: float[...] (same shape; float32, float16 or bfloat16, computed in
    float32); t_now, t_next: floats in [0, 1] (0-dim tensors are read with float(), a host sync
    for CUDA tensors)  ->  x_next: float[...] in x_t's dtype."""
    if not (isinstance(x_t, torch.Tensor) and isinstance(x_pred, torch.Tensor) and x_t.shape == x_pred.shape):
        raise ValueError(f"x_t and x_pred must be tensors of one shape, got "
                         f"{list(getattr(x_t, 'shape', []))} and {list(getattr(x_pred, 'shape', []))}")
    if x_t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"ddim_step kernel takes float32/float16/bfloat16, got {x_t.dtype}: cast "
                         f"x_t, or use the reference (PIX2SEQD_KERNELS=0)")
    if any(isinstance(t, torch.Tensor) and t.numel() != 1 for t in (t_now, t_next)):
        raise ValueError("the ddim_step kernel takes one t_now and one t_next for the whole tensor; for "
                         "per-example times use diffusion.ddim_step (it runs the reference for them)")
    t_now, t_next = float(t_now), float(t_next)
    if not (0 <= t_next <= 1 and 0 <= t_now <= 1):
        raise ValueError(f"t_now and t_next must lie in [0, 1], got {t_now}, {t_next}")
    g_now, g_next = gamma(t_now), gamma(t_next)
    if g_now >= 1:
        raise ValueError(f"gamma(t_now) = {g_now} must be < 1 (some noise left to remove)")
    alpha = math.sqrt((1 - g_next) / (1 - g_now))
    beta = math.sqrt(g_next) - alpha * math.sqrt(g_now)
    x_next = torch.empty_like(x_t, memory_format=torch.contiguous_format)
    if x_t.numel():
        grid = (triton.cdiv(x_t.numel(), BLOCK),)
        ddim_step_kernel[grid](x_t.contiguous(), x_pred.contiguous(), x_next, x_t.numel(),
                               alpha, beta, float(scale), BLOCK)
    return x_next
