"""Triton kernels for the hot loops of Pix2Seq-D; see kernels/bits.py, softmax_ce.py, ddim.py.

The flat modules call a kernel when its tensors are on CUDA and the PyTorch reference otherwise.
PIX2SEQD_KERNELS=0 forces the reference everywhere (for comparison), =1 forces the kernels even
on the CPU (through Triton's interpreter, TRITON_INTERPRET=1, which must be set before the kernel
modules are imported); unset or "auto" means automatic.
"""
import os

# Triton 3.9 warns unless this is set; "1" keeps its current default (fused multiply-add allowed),
# which the tolerances in kernels/README.md were measured with.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def enabled(x):
    """Whether to run the Triton kernel for tensor x (read from the environment at each call)."""
    mode = os.environ.get("PIX2SEQD_KERNELS", "auto")
    if mode not in ("0", "1", "auto"):
        raise ValueError(f"PIX2SEQD_KERNELS must be 0 (reference), 1 (kernels) or auto (kernels on CUDA), got {mode!r}")
    if mode == "1" and not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("PIX2SEQD_KERNELS=1 on CPU tensors runs the kernels in Triton's interpreter: also set "
                         "TRITON_INTERPRET=1 (before start-up), or use PIX2SEQD_KERNELS=auto")
    return mode == "1" or (mode == "auto" and x.is_cuda)
