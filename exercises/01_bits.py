"""Exercise 1: integers as bits (paper Sec. 2, "Diffusion Models with Analog Bits"; App. A Alg. 3).

A panoptic mask holds two integers per pixel, a class id and an instance identity. Diffusion
needs real numbers, so Bit Diffusion writes each integer as n binary bits and treats every bit
as a real number (an "analog bit", later shifted to {-b, +b}). Sampling ends by reading the
bits back: threshold each analog bit at 0, then turn the bits into the integer again.
Alg. 3 orders the bits least significant first: bit j of x is (x >> j) & 1, so 6 with n = 4
becomes [0, 1, 1, 0].

Write the two functions (PyTorch; no Python loops over elements needed):

    int2bit(x, n=8) -> bits
        x: long[...] with 0 <= x < 2**n. Returns an integer tensor (torch.long or torch.uint8)
        of shape [..., n]: bits[..., j] = (x >> j) & 1, least significant bit first.
    bit2int(bits) -> x
        bits: long[..., n] of 0s and 1s, least significant bit first. Returns long[...]:
        x = sum_j bits[..., j] * 2**j. (bit2int(int2bit(x, n)) == x.)

Hints: torch.arange(n) gives the shifts; x.unsqueeze(-1) >> shifts broadcasts to [..., n];
`& 1` keeps the last bit; 2 ** torch.arange(n) are the place values.
Check:  python -m exercises.check 1
"""
import torch  # noqa: F401 (for your answer)


def int2bit(x, n=8):
    raise NotImplementedError("exercise 1: write int2bit")


def bit2int(bits):
    raise NotImplementedError("exercise 1: write bit2int")
