"""Fused weighted softmax cross entropy + expected analog bits, forward and backward (Sec. 3.2).

For logits m_logits: float[B, G, K, H, W] (G softmax groups of K = 2**n entries per pixel,
channels-first, read in place: no permute), target: int[B, H, W, G], weights w: float[B, H, W]:

    lse[g]       = log sum_k exp(x[g, k])
    loss         = w * sum_g (lse[g] - x[g, target[g]])                 (losses.softmax_ce)
    m_pred[g, j] = scale * (2 * sum_k p[g, k] * bit_j(k) - 1)           (losses.expected_bits)

with p = softmax(x) and bit_j(k) the j-th bit of k, LSB first. Backward, for incoming gradients
dL[B, H, W] and dM[B, G*n, H, W], with c[g, k] = sum_j dM[g, j] * bit_j(k):

    dx[g, k] = p[g, k] * (w dL + 2 scale (c[g, k] - sum_k' p[g, k'] c[g, k'])) - w dL [k == target[g]]

Each program owns BLOCK_P pixels of one image and, per group, loads the whole [K, BLOCK_P] tile
of logits (K <= 1024 fits one block; the official K = 256): max, exp, sum and the n bit sums are
reductions over the tile's first axis, so one read of the logits gives loss and m_pred. Like
flash-attention, forward saves only lse (one float per pixel and group; plus the unweighted CE per
pixel when the weights need a gradient) and backward recomputes
p = exp(x - lse) from the untouched logits: the softmax never reaches global memory.

Memory traffic per pixel, official sizes (G = 2, K = 256, n = 8, float32 logits, int64 target):
  forward   fused: read 2048 B logits + 16 B target + 4 B w, write 4 B loss + 64 B m_pred + 8 B
            lse: 2.1 KB. Eager (softmax_ce + expected_bits): log_softmax, gather, softmax and the
            bit einsum each read and write [G, K] tensors: ~6 passes of 2 KB = ~12 KB.
  backward  fused: read logits, lse, target, w, dL, dM (2.1 KB), write dx (2 KB): 4.2 KB. Eager:
            the backward of each op above, plus the sum of the two logits gradients: ~8 passes,
            ~16 KB, and the saved softmaxes (2 x 2 KB per pixel) live between the passes.
bf16 logits halve the logits and dx bytes; all arithmetic is float32 (float64 for float64 logits).

Out-of-range targets (outside [0, K)) give a NaN loss at that pixel and NaN gradients for its group, not
a host-synchronising check. When the weights need a gradient (dL/dw = dL * sum_g CE_g, as through the
reference), forward also stores the unweighted per-pixel CE (4 B per pixel).
"""
import torch
import triton
import triton.language as tl


@triton.jit
def pixel_block(HW, n_blocks, K: tl.constexpr, BLOCK_P: tl.constexpr):
    """Which pixels this program owns, shared by forward and backward: image b (int64, so that
    offsets of large batches do not overflow), its pixels hw[BLOCK_P] (valid: inside the image) and
    tile[K, BLOCK_P], the offsets of their logits within one group: x[b, g, k, hw] sits at
    ((b G + g) K + k) HW + hw, so a group's tile starts at (b G + g) K HW."""
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    hw = (pid % n_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    k = tl.arange(0, K)
    return b, hw, hw < HW, k, k[:, None] * HW + hw[None, :]


@triton.jit
def softmax_ce_fwd_kernel(x_ptr, target_ptr, w_ptr, loss_ptr, m_pred_ptr, lse_ptr, ce_ptr, HW, n_blocks, scale,
                          G: tl.constexpr, K: tl.constexpr, N: tl.constexpr, HAS_TARGET: tl.constexpr,
                          SAVE_LSE: tl.constexpr, SAVE_CE: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_P: tl.constexpr):
    b, hw, valid, k, tile = pixel_block(HW, n_blocks, K, BLOCK_P)
    ce = tl.zeros([BLOCK_P], dtype=ACC)
    for g in tl.static_range(G):
        x = tl.load(x_ptr + (b * G + g) * K * HW + tile, mask=valid[None, :], other=0.0).to(ACC)
        x_max = tl.max(x, axis=0)
        e = tl.exp(x - x_max[None, :])
        s = tl.sum(e, axis=0)
        lse = x_max + tl.log(s)
        if SAVE_LSE:
            tl.store(lse_ptr + (b * G + g) * HW + hw, lse, mask=valid)
        for j in tl.static_range(N):
            bit = ((k >> j) & 1).to(ACC)
            e_j = tl.sum(e * bit[:, None], axis=0) / s
            tl.store(m_pred_ptr + ((b * G + g) * N + j) * HW + hw, scale * (2 * e_j - 1), mask=valid)
        if HAS_TARGET:
            t = tl.load(target_ptr + (b * HW + hw) * G + g, mask=valid, other=0)
            x_t = tl.sum(tl.where(k[:, None] == t[None, :], x, 0.0), axis=0)
            ce += tl.where((t >= 0) & (t < K), lse - x_t, float("nan"))
    if HAS_TARGET:
        w = tl.load(w_ptr + b * HW + hw, mask=valid, other=0.0).to(ACC)
        tl.store(loss_ptr + b * HW + hw, w * ce, mask=valid)
        if SAVE_CE:
            tl.store(ce_ptr + b * HW + hw, ce, mask=valid)


@triton.jit
def softmax_ce_bwd_kernel(x_ptr, target_ptr, w_ptr, lse_ptr, d_loss_ptr, d_m_pred_ptr, dx_ptr, HW, n_blocks,
                          scale, G: tl.constexpr, K: tl.constexpr, N: tl.constexpr, HAS_D_LOSS: tl.constexpr,
                          HAS_D_M: tl.constexpr, ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    b, hw, valid, k, tile = pixel_block(HW, n_blocks, K, BLOCK_P)
    if HAS_D_LOSS:
        w_dl = (tl.load(w_ptr + b * HW + hw, mask=valid, other=0.0).to(ACC)
                * tl.load(d_loss_ptr + b * HW + hw, mask=valid, other=0.0).to(ACC))
    for g in tl.static_range(G):
        x = tl.load(x_ptr + (b * G + g) * K * HW + tile, mask=valid[None, :], other=0.0).to(ACC)
        lse = tl.load(lse_ptr + (b * G + g) * HW + hw, mask=valid, other=0.0)
        p = tl.exp(x - lse[None, :])  # the softmax, recomputed in registers
        dx = tl.zeros([K, BLOCK_P], dtype=ACC)
        if HAS_D_M:  # through m_pred: dm_j/dx_k = 2 scale p_k (bit_j(k) - E_j)
            c = tl.zeros([K, BLOCK_P], dtype=ACC)
            for j in tl.static_range(N):
                d_m = tl.load(d_m_pred_ptr + ((b * G + g) * N + j) * HW + hw, mask=valid, other=0.0).to(ACC)
                c += ((k >> j) & 1).to(ACC)[:, None] * d_m[None, :]
            dx = (2 * scale) * p * (c - tl.sum(p * c, axis=0)[None, :])
        if HAS_D_LOSS:  # through the loss: w dL (p - onehot(target))
            t = tl.load(target_ptr + (b * HW + hw) * G + g, mask=valid, other=0)
            w_dl_g = tl.where((t >= 0) & (t < K), w_dl, float("nan"))
            dx += w_dl_g[None, :] * (p - (k[:, None] == t[None, :]).to(ACC))
        tl.store(dx_ptr + (b * G + g) * K * HW + tile, dx.to(dx_ptr.dtype.element_ty), mask=valid[None, :])


def _launch_config(K, HW):
    """Pixels per program (a [K, BLOCK_P] tile of ~4096 logits) and warps."""
    block_p = min(max(1, 4096 // K), triton.next_power_of_2(HW))
    return block_p, max(1, min(8, K * block_p // 512))


ACC_DTYPE = {torch.float32: tl.float32, torch.bfloat16: tl.float32, torch.float16: tl.float32,
             torch.float64: tl.float64}


class WeightedSoftmaxCE(torch.autograd.Function):
    """(loss, m_pred) = weighted_softmax_ce(logits, target, weights, scale); see the module docstring."""

    @staticmethod
    def forward(ctx, logits, target, weights, scale):
        B, G, K, H, W = logits.shape
        N, HW = K.bit_length() - 1, H * W
        acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
        has_target = target is not None
        save_lse, save_ce = ctx.needs_input_grad[0], has_target and ctx.needs_input_grad[2]
        loss = logits.new_empty((B, H, W) if has_target else (0,), dtype=acc)
        m_pred = logits.new_empty((B, G * N, H, W), dtype=acc)
        lse = logits.new_empty((B, G, H, W) if save_lse else (0,), dtype=acc)
        ce = logits.new_empty((B, H, W) if save_ce else (0,), dtype=acc)  # unweighted, for dL/dw
        logits = logits.contiguous()
        if has_target:
            target, weights = target.contiguous(), weights.contiguous()
        if B * HW:
            block_p, num_warps = _launch_config(K, HW)
            n_blocks = triton.cdiv(HW, block_p)
            softmax_ce_fwd_kernel[(B * n_blocks,)](
                logits, target if has_target else logits, weights if has_target else logits, loss, m_pred,
                lse, ce, HW, n_blocks, scale, G, K, N, has_target, save_lse, save_ce, ACC_DTYPE[logits.dtype],
                block_p, num_warps=num_warps)
        ctx.set_materialize_grads(False)
        if not has_target:
            ctx.mark_non_differentiable(loss)
        ctx.save_for_backward(logits, target, weights, lse, ce)
        ctx.scale = scale
        return loss, m_pred

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_loss, d_m_pred):
        logits, target, weights, lse, ce = ctx.saved_tensors
        if target is None:
            d_loss = None
        d_w = (d_loss * ce).to(weights.dtype) if ctx.needs_input_grad[2] and d_loss is not None else None
        if not ctx.needs_input_grad[0] or (d_loss is None and d_m_pred is None):
            return None, None, d_w, None
        B, G, K, H, W = logits.shape
        HW = H * W
        dx = torch.empty_like(logits)
        if B * HW:
            block_p, num_warps = _launch_config(K, HW)
            n_blocks = triton.cdiv(HW, block_p)
            d_loss = d_loss.contiguous() if d_loss is not None else None
            d_m_pred = d_m_pred.contiguous() if d_m_pred is not None else None
            softmax_ce_bwd_kernel[(B * n_blocks,)](
                logits, target if d_loss is not None else logits, weights if d_loss is not None else logits,
                lse, d_loss if d_loss is not None else logits, d_m_pred if d_m_pred is not None else logits,
                dx, HW, n_blocks, ctx.scale, G, K, K.bit_length() - 1, d_loss is not None, d_m_pred is not None,
                ACC_DTYPE[logits.dtype], block_p, num_warps=num_warps)
        return dx, None, d_w, None


def weighted_softmax_ce(logits, target, weights, scale=0.1):
    """One pass for losses.softmax_ce(logits, target, weights) and losses.expected_bits(logits, scale).

    logits: float[B, G, K, H, W] (float32, bfloat16, float16 or float64; K = 2**n, 2 <= K <= 1024),
    target: int[B, H, W, G] or None (inference: m_pred only), weights: float[B, H, W] (ignored when
    target is None)  ->  (loss: float32[B, H, W] or None, m_pred: float32[B, G*n, H, W]); float64
    logits give float64 outputs. Differentiable wrt logits through both outputs, and wrt weights.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 5 or logits.dtype not in ACC_DTYPE:
        raise ValueError(f"logits must be a float tensor [B, G, K, H, W] (float32/bfloat16/float16/float64), "
                         f"got {getattr(logits, 'dtype', type(logits).__name__)} {list(getattr(logits, 'shape', []))}")
    B, G, K, H, W = logits.shape
    if K < 2 or K > 1024 or K & (K - 1):
        raise ValueError(f"a softmax group must have K = 2**n entries with 2 <= K <= 1024, got K = {K}")
    if K * H * W >= 2 ** 31:
        raise ValueError(f"one image's logits must hold fewer than 2**31 entries (int32 offsets), got K*H*W = "
                         f"{K * H * W}: use smaller masks")
    if target is not None:
        if target.shape != (B, H, W, G) or target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ValueError(f"target must be an integer tensor [B, H, W, G] = {[B, H, W, G]}, "
                             f"got {target.dtype} {list(target.shape)}")
        if weights is None or weights.shape != (B, H, W) or not weights.dtype.is_floating_point:
            raise ValueError(f"weights must be a float tensor [B, H, W] = {[B, H, W]} (losses.size_weights), got "
                             f"{None if weights is None else (weights.dtype, list(weights.shape))}")
    loss, m_pred = WeightedSoftmaxCE.apply(logits, target, weights if target is not None else None, float(scale))
    return (loss if target is not None else None), m_pred
