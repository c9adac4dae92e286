"""Fused mask <-> analog bits (Sec. 2, Sec. 3.2 input scaling; App. A Alg. 3).

    mask_to_analog: mask: int[B, H, W, 2]  ->  m_bits: float32[B, n_c + n_i, H, W], entries +-scale
    analog_to_mask: m: float[B, n_c + n_i, H, W]  ->  mask: int64[B, H, W, 2], bits thresholded at 0

Both must equal bits.mask_to_analog / bits.analog_to_mask exactly (ints bit for bit, the analog
values are exactly +-float32(scale)).

Memory traffic per pixel, official sizes (n_c = n_i = 8, int64 mask, float32 bits):
  mask_to_analog  unfused (bits.py): int2bit reads 8 B and writes a uint8[n] per id, torch.cat
                  copies them, .float(), *2-1, *scale and the channels-first .contiguous() each
                  read and write all n_bits: ~16 + 5 * 16 * (1..4 B) ~= 250 B read + written.
                  fused: read 16 B (the two ids), write 16 * 4 = 64 B: 80 B, one pass, no temporaries.
  analog_to_mask  unfused: m > 0 reads 64 B and writes 16 B of bools, bit2int casts to long (128 B),
                  multiplies, sums and stacks: ~500 B. fused: read 64 B, write 16 B: 80 B.
Each program owns BLOCK consecutive pixels of one image, so every load and store of the
channels-first bits is contiguous along the pixels, and the loops over bits are unrolled at
compile time (the bit counts are constexpr).
"""
import torch
import triton
import triton.language as tl

from bits import check_mask


@triton.jit
def mask_to_analog_kernel(mask_ptr, m_ptr, HW, n_blocks, scale,
                          N_CLASS: tl.constexpr, N_IDENTITY: tl.constexpr, WIDE: tl.constexpr,
                          BLOCK: tl.constexpr):
    # program pid writes the bits of pixels hw in [i * BLOCK, (i + 1) * BLOCK) of image b
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    hw = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    valid = hw < HW
    # mask is [B, HW, 2] contiguous: (class, identity) of pixel hw sit at 2 hw and 2 hw + 1
    ids = mask_ptr + b * HW * 2 + hw * 2
    cls = tl.load(ids, mask=valid, other=0)
    idn = tl.load(ids + 1, mask=valid, other=0)
    if WIDE:  # more than 31 bits: shift in 64 bits
        cls = cls.to(tl.int64)
        idn = idn.to(tl.int64)
    else:
        cls = cls.to(tl.int32)
        idn = idn.to(tl.int32)
    # m is [B, N_CLASS + N_IDENTITY, HW]: bit j of pixel hw sits at j * HW + hw
    out = m_ptr + b * (N_CLASS + N_IDENTITY) * HW + hw
    for j in tl.static_range(N_CLASS):
        tl.store(out + j * HW, tl.where(((cls >> j) & 1) != 0, scale, -scale), mask=valid)
    for j in tl.static_range(N_IDENTITY):
        tl.store(out + (N_CLASS + j) * HW, tl.where(((idn >> j) & 1) != 0, scale, -scale), mask=valid)


@triton.jit
def exact_positive(x):
    """x > 0 as the reference computes it, in x's own dtype (a float64 1e-50 stays a 1 bit; a float32
    cast would flush it to 0). bfloat16 alone is upcast first (exact: every bf16 value is a float32),
    because Triton's interpreter misreads bf16 comparisons."""
    if x.dtype.is_bf16():
        x = x.to(tl.float32)
    return x > 0


@triton.jit
def analog_to_mask_kernel(m_ptr, mask_ptr, HW, n_blocks,
                          N_CLASS: tl.constexpr, N_IDENTITY: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    hw = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    valid = hw < HW
    src = m_ptr + b * (N_CLASS + N_IDENTITY) * HW + hw
    cls = tl.zeros([BLOCK], dtype=tl.int64)
    for j in tl.static_range(N_CLASS):
        bit = exact_positive(tl.load(src + j * HW, mask=valid, other=0.0))
        cls = cls | (bit.to(tl.int64) << j)
    idn = tl.zeros([BLOCK], dtype=tl.int64)
    for j in tl.static_range(N_IDENTITY):
        bit = exact_positive(tl.load(src + (N_CLASS + j) * HW, mask=valid, other=0.0))
        idn = idn | (bit.to(tl.int64) << j)
    dst = mask_ptr + b * HW * 2 + hw * 2
    tl.store(dst, cls, mask=valid)
    tl.store(dst + 1, idn, mask=valid)


BLOCK = 1024


def _check_sizes(n_class_bits, n_identity_bits, H, W):
    for name, n in (("n_class_bits", n_class_bits), ("n_identity_bits", n_identity_bits)):
        if not (isinstance(n, int) and 1 <= n <= 62):
            raise ValueError(f"{name} must be an int in [1, 62] (the bits of an int64 id), got {n!r}")
    if (n_class_bits + n_identity_bits) * H * W >= 2 ** 31:
        raise ValueError(f"one image's bits must hold fewer than 2**31 entries (int32 offsets), got "
                         f"{n_class_bits + n_identity_bits} x {H} x {W}: use smaller masks")


def mask_to_analog(mask, n_class_bits=8, n_identity_bits=8, scale=0.1, check=True):
    """mask: int[B, H, W, 2] -> m_bits: float32[B, n_class_bits + n_identity_bits, H, W] in {-b, b}.

    check=True validates like the reference (bits.check_mask: shape, dtype and the id range, the
    last a min/max with a host sync). check=False keeps the shape and dtype checks but skips the
    range check (no sync, for the hot path): ids outside [0, 2**n) then keep only their low n bits.
    """
    if check:
        check_mask(mask, n_class_bits, n_identity_bits)
    elif (not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[-1] != 2
          or mask.dtype.is_floating_point or mask.dtype == torch.bool):
        raise ValueError(f"mask must be an integer tensor [B, H, W, 2], got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} {list(getattr(mask, 'shape', []))}")
    B, H, W, _ = mask.shape
    _check_sizes(n_class_bits, n_identity_bits, H, W)
    m_bits = torch.empty(B, n_class_bits + n_identity_bits, H, W, device=mask.device, dtype=torch.float32)
    if m_bits.numel() == 0:
        return m_bits
    wide = max(n_class_bits, n_identity_bits) > 31
    n_blocks = triton.cdiv(H * W, BLOCK)
    mask_to_analog_kernel[(B * n_blocks,)](mask.contiguous(), m_bits, H * W, n_blocks, float(scale),
                                n_class_bits, n_identity_bits, wide, BLOCK)
    return m_bits


def analog_to_mask(m, n_class_bits=8, n_identity_bits=8):
    """m: float[B, n_class_bits + n_identity_bits, H, W] -> mask: int64[B, H, W, 2]; a bit is 1
    where m > 0 (NaN reads as 0, as in the reference)."""
    if not isinstance(m, torch.Tensor) or m.dim() != 4 or m.shape[1] != n_class_bits + n_identity_bits:
        raise ValueError(f"analog bits must have shape [B, {n_class_bits + n_identity_bits}, H, W], "
                         f"got {list(getattr(m, 'shape', []))}")
    B, _, H, W = m.shape
    _check_sizes(n_class_bits, n_identity_bits, H, W)
    mask = torch.empty(B, H, W, 2, device=m.device, dtype=torch.int64)
    if mask.numel() == 0:
        return mask
    n_blocks = triton.cdiv(H * W, BLOCK)
    analog_to_mask_kernel[(B * n_blocks,)](m.contiguous(), mask, H * W, n_blocks, n_class_bits,
                                           n_identity_bits, BLOCK)
    return mask
