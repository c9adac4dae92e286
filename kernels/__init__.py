"""Triton kernels for the hot loops of Pix2Seq-D; see kernels/bits.py, softmax_ce.py, ddim.py.

The flat modules call a kernel when its tensors are on CUDA and the PyTorch reference otherwise.
PIX2SEQD_KERNELS=0 forces the reference everywhere (for comparison), =1 forces the kernels even
on the CPU (through Triton's interpreter, TRITON_INTERPRET=1, which must be set before the kernel
modules are imported); unset or "auto" means automatic.

Triton is optional: it has wheels for Linux only. Without it (or with a release outside
TRITON_RANGE) "auto" runs the references, and asking for a kernel fails with one line saying why
(`triton_problem`). Everything else in the project needs torch alone.
"""
import os
import re
import sys

# Triton 3.9 warns unless this is set; "1" keeps its current default (fused multiply-add allowed),
# which the tolerances in kernels/README.md were measured with.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

# The releases this project is tested with: torch 2.11 to 2.15, and the triton they pin (3.6 to 3.9).
# Lower bound included, upper bound excluded; requirements.txt states the same ranges.
TORCH_RANGE = ((2, 11), (2, 16))
TRITON_RANGE = ((3, 6), (3, 10))


def version_tuple(version):
    """'2.13.0+cpu' -> (2, 13): the release's major and minor number."""
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def range_text(bounds):
    (a, b), (c, d) = bounds
    return f">={a}.{b},<{c}.{d}"


def in_range(version, bounds):
    return bounds[0] <= version_tuple(version) < bounds[1]


_problem = []  # memo of triton_problem(): importing triton takes a second


def triton_problem():
    """None when a supported Triton imports, else one line saying what is wrong and what to do."""
    if not _problem:
        want = f"triton{range_text(TRITON_RANGE)}"
        try:
            import triton
            version = getattr(triton, "__version__", "unknown")
            why = None if in_range(version, TRITON_RANGE) else (
                f"Triton {version} is installed, but the kernels support {want}: pip install '{want}'")
        except ModuleNotFoundError as e:
            why = (f"Triton is not installed (it has wheels for Linux only; there, pip install '{want}'); "
                   "the PyTorch references run everywhere without it") if e.name == "triton" else (
                f"Triton does not import (it needs {e.name}); reinstall it: pip install '{want}'")
        except Exception as e:  # a broken install raises anything at import
            why = f"Triton does not import ({type(e).__name__}: {e}); reinstall it: pip install '{want}'"
        _problem.append(why)
    return _problem[0]


def require(what):
    """Exit with one line (status 2) unless the kernels can run; `what` names what asked for them."""
    problem = triton_problem()
    if problem:
        print(f"{what}: error: {problem}", file=sys.stderr)
        sys.exit(2)


_warned_torch = []


def check_torch():
    """Print one note (once per process) when torch is outside TORCH_RANGE; carry on either way."""
    import torch
    if not _warned_torch and not in_range(torch.__version__, TORCH_RANGE):
        _warned_torch.append(True)
        print(f"note: torch {torch.__version__} is outside the tested range torch{range_text(TORCH_RANGE)}; "
              "carrying on", file=sys.stderr)


def enabled(x):
    """Whether to run the Triton kernel for tensor x (read from the environment at each call)."""
    mode = os.environ.get("PIX2SEQD_KERNELS", "auto")
    if mode not in ("0", "1", "auto"):
        raise ValueError(f"PIX2SEQD_KERNELS must be 0 (reference), 1 (kernels) or auto (kernels on CUDA), got {mode!r}")
    if mode == "1":
        if triton_problem():
            raise RuntimeError(f"PIX2SEQD_KERNELS=1: {triton_problem()}")
        if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("PIX2SEQD_KERNELS=1 on CPU tensors runs the kernels in Triton's interpreter: also set "
                             "TRITON_INTERPRET=1 (before start-up), or use PIX2SEQD_KERNELS=auto")
        return True
    return mode == "auto" and x.is_cuda and triton_problem() is None
