"""Analog bits: Sec. 2 and Sec. 3.2 of the paper, App. A Alg. 3 (int2bit / bit2int).

A panoptic mask `mask: long[B, H, W, 2]` holds (class id, identity) per pixel. Each integer
becomes `n` binary bits, least significant bit first (Alg. 3), and each bit v becomes the analog
value (2v - 1) * scale, i.e. one of {-b, +b} (Sec. 3.2, "input scaling", b = scale).
Model tensors are channels-first: `m: float[B, n_class_bits + n_identity_bits, H, W]`,
class bits first.
"""
import torch


def int2bit(x, n=8):
    """Alg. 3. x: long[...] with 0 <= x < 2**n (or a Python int, list, numpy array)  ->  uint8[..., n],
    LSB first."""
    x = torch.as_tensor(x)
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"int2bit expects an integer tensor, got {x.dtype}")
    if not 1 <= n <= 62:
        raise ValueError(f"int2bit: n must be in [1, 62], got {n}")
    # The range, as Python ints (2**n may not fit x's dtype). Skipped inside torch.compile, where its
    # host sync would split the graph: compiled callers (train.py --compile) feed ids their data sets made.
    if x.numel() and not torch.compiler.is_compiling() and (int(x.min()) < 0 or int(x.max()) >= 2 ** n):
        raise ValueError(f"int2bit: values must lie in [0, {2 ** n}) to fit in {n} bits, "
                         f"got range [{int(x.min())}, {int(x.max())}]")
    shifts = torch.arange(n, device=x.device)
    return ((x.long().unsqueeze(-1) >> shifts) & 1).to(torch.uint8)


def bit2int(bits):
    """Alg. 3. bits: [..., n] of {0, 1} (int or bool); floats are analog bits, thresholded at 0
    (a float 0/1 bit thresholds the same way)  ->  long[...]."""
    bits = torch.as_tensor(bits)
    if bits.dtype.is_floating_point:
        bits = bits > 0
    n = bits.shape[-1]
    weights = 2 ** torch.arange(n, device=bits.device, dtype=torch.long)
    return (bits.long() * weights).sum(-1)


def check_mask(mask, n_class_bits, n_identity_bits):
    """Raise a ValueError naming the problem unless mask is long[B, H, W, 2] within the bit budget
    (the budget is not checked inside torch.compile: see int2bit)."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 4 or mask.shape[-1] != 2:
        raise ValueError(f"mask must have shape [B, H, W, 2] (class, identity), got {list(mask.shape)}")
    if mask.dtype.is_floating_point or mask.dtype == torch.bool:
        raise ValueError(f"mask must be an integer tensor, got {mask.dtype}")
    if torch.compiler.is_compiling():  # the range check is a host sync (see int2bit)
        return
    for c, (name, n) in enumerate((("class", n_class_bits), ("identity", n_identity_bits))):
        v = mask[..., c]
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= 2 ** n):  # Python ints: no uint8 wrap-around
            raise ValueError(f"mask {name} ids span [{int(v.min())}, {int(v.max())}] but "
                             f"{n} {name} bits hold only 0..{2 ** n - 1}: raise the bit count")


def mask_to_analog(mask, n_class_bits=8, n_identity_bits=8, scale=0.1):
    """mask: long[B, H, W, 2]  ->  m_bits: float[B, n_class_bits + n_identity_bits, H, W] in {-b, b}."""
    check_mask(mask, n_class_bits, n_identity_bits)
    bits = torch.cat([int2bit(mask[..., 0], n_class_bits), int2bit(mask[..., 1], n_identity_bits)], -1)
    return (bits.float() * 2 - 1).mul_(scale).permute(0, 3, 1, 2).contiguous()


def analog_to_mask(m, n_class_bits=8, n_identity_bits=8):
    """m: float[B, n_bits, H, W]  ->  mask: long[B, H, W, 2], each bit thresholded at 0."""
    if m.dim() != 4 or m.shape[1] != n_class_bits + n_identity_bits:
        raise ValueError(f"analog bits must have shape [B, {n_class_bits + n_identity_bits}, H, W], "
                         f"got {list(m.shape)}")
    bits = (m > 0).permute(0, 2, 3, 1)
    return torch.stack([bit2int(bits[..., :n_class_bits]), bit2int(bits[..., n_class_bits:])], -1)
