"""The classroom exercises (exercises/): the checker passes every reference solution (so the
exercises follow the project's code as it changes), says "not written yet" for every untouched
template, and names the typical mistake of each exercise in its hint.

The checker runs in-process (exercises.check.main); one subprocess run tests the CLI.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from exercises.check import EXERCISES, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "exercises", "solutions")

KERNEL_HEAD = """
import triton
import triton.language as tl


@triton.jit
def ddim_step_kernel(x_t_ptr, x_pred_ptr, x_next_ptr, N, alpha, beta, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
"""


def kernel(body):
    """A student's ddim_step_kernel: the signature and offsets, then body."""
    return KERNEL_HEAD + textwrap.indent(textwrap.dedent(body), "    ")


EXPECTED_BITS = """
import torch
from bits import int2bit

def expected_bits(logits, scale=0.1):  # q = {q}, bits in the order {order}
    B, G, K, H, W = logits.shape
    n = K.bit_length() - 1
    e = torch.einsum("bgkhw,kn->{order}", {q}, int2bit(torch.arange(K), n).float())
    return (scale * (2 * e - 1)).reshape(B, G * n, H, W)
"""

# (exercise, a typical mistake as a student file, words the hint must contain)
MISTAKES = [
    (1, """
        import torch
        from bits import bit2int

        def int2bit(x, n=8):  # most significant bit first
            return (x.unsqueeze(-1) >> torch.arange(n - 1, -1, -1)) & 1
        """, "most-significant-bit first"),
    (1, """
        import torch
        from bits import int2bit

        def bit2int(bits):  # reads the first bit as the most significant
            return (bits * 2 ** torch.arange(bits.shape[-1] - 1, -1, -1)).sum(-1)
        """, "bits[..., 0] is the least significant bit"),
    (1, """
        import torch
        from bits import int2bit

        def bit2int(bits):  # int8 place values: 200 comes out as -56
            place = (2 ** torch.arange(bits.shape[-1])).to(torch.int8)
            return (bits.to(torch.int8) * place).sum(-1)
        """, "smaller int types overflow"),
    (1, """
        import torch
        from bits import int2bit

        def bit2int(bits):  # right values, int32
            return (bits * 2 ** torch.arange(bits.shape[-1])).sum(-1).int()
        """, "return torch.long (int64)"),
    (2, """
        import math
        import torch
        from schedule import time_pairs

        def gamma(t, ns=0.0002, ds=0.00025):  # no square
            cos = torch.cos if isinstance(t, torch.Tensor) else math.cos
            return cos(((t + ns) / (1 + ds)) * math.pi / 2)
        """, "gamma is its square"),
    (2, """
        from schedule import gamma

        def time_pairs(steps, td=1.0):  # td forgotten
            return [(1 - s / steps, max(1 - (s + 1) / steps, 0.0)) for s in range(steps)]
        """, "td is missing: t_next should be 1 - (s + 1 + td)/steps"),
    (2, """
        import math
        import torch
        from schedule import time_pairs

        def gamma(t, ns=0.0002, ds=0.00025):  # a float32 tensor for a float t
            return torch.cos(torch.tensor(((t + ns) / (1 + ds)) * math.pi / 2)) ** 2
        """, "return a Python float computed with math.cos"),
    (2, """
        import math
        import torch
        from schedule import time_pairs

        def gamma(t, ns=0.0002, ds=0.00025):  # 1 - gamma
            cos = torch.cos if isinstance(t, torch.Tensor) else math.cos
            return 1 - cos(((t + ns) / (1 + ds)) * math.pi / 2) ** 2
        """, "you return 1 - gamma"),
    (2, """
        import math
        import torch
        from schedule import time_pairs

        def gamma(t, ns=0.0002, ds=0.00025):  # pi, not pi / 2: gamma(0.0) prints as 1 at 5 digits
            cos = torch.cos if isinstance(t, torch.Tensor) else math.cos
            return cos(((t + ns) / (1 + ds)) * math.pi) ** 2
        """, "expected: 0.9999999014\n  got:      0.9999996054"),
    (3, """
        import math
        from schedule import gamma

        def ddim_step(x_t, x_pred, t_now, t_next, scale=0.1):  # no clip
            g_now, g_next = gamma(t_now), gamma(t_next)
            eps = (x_t - math.sqrt(g_now) * x_pred) / math.sqrt(1 - g_now)
            return math.sqrt(g_next) * x_pred + math.sqrt(1 - g_next) * eps
        """, "x0 must be clipped to [-b, b] before eps is computed"),
    (3, """
        import math
        from schedule import gamma

        def ddim_step(x_t, x_pred, t_now, t_next, scale=0.1):  # right result, inputs overwritten
            g_now, g_next = gamma(t_now), gamma(t_next)
            x0 = x_pred.clamp_(-scale, scale)
            eps = x_t
            eps -= math.sqrt(g_now) * x0
            eps /= math.sqrt(1 - g_now)
            return math.sqrt(g_next) * x0 + math.sqrt(1 - g_next) * eps
        """, "do not modify the inputs in place"),
    (3, """
        import math
        from schedule import gamma

        def ddim_step(x_t, x_pred, t_now, t_next, scale=0.1):  # gamma_next in eps
            g_next = gamma(t_next)
            x0 = x_pred.clamp(-scale, scale)
            eps = (x_t - math.sqrt(g_next) * x0) / math.sqrt(1 - g_next)
            return math.sqrt(g_next) * x0 + math.sqrt(1 - g_next) * eps
        """, "you returned x_t unchanged: eps must use gamma_now"),
    (4, """
        def size_weights(identity, p=0.2):  # 1 / c**p, not normalised
            flat = identity.reshape(identity.shape[0], -1)
            c = (flat[:, :, None] == flat[:, None, :]).sum(-1).float()
            return (c ** -p).view(identity.shape)
        """, "weights must sum to H*W per image"),
    (4, """
        import torch

        def size_weights(identity, p=0.2):  # void pixels weighted 1, the others 1 / c**p
            B, H, W = identity.shape
            flat = identity.reshape(B, -1)
            c = (flat[:, :, None] == flat[:, None, :]).sum(-1).float()
            w = torch.where(flat == 0, 1.0, c ** -p)
            return (w * H * W / w.sum(1, keepdim=True)).view(B, H, W)
        """, "void pixels (identity 0) are one segment too"),
    (4, """
        def size_weights(identity, p=0.2):  # void pixels weighted 0
            B, H, W = identity.shape
            flat = identity.reshape(B, -1)
            w = (flat[:, :, None] == flat[:, None, :]).sum(-1).float() ** -p * (flat != 0)
            return (w * H * W / w.sum(1, keepdim=True)).view(B, H, W)
        """, "void pixels (identity 0) are one segment too"),
    (4, """
        def size_weights(identity, p=0.2):  # segments counted over the whole batch
            B, H, W = identity.shape
            flat = identity.reshape(-1)
            w = (flat[:, None] == flat[None, :]).sum(-1).float().view(B, H * W) ** -p
            return (w * H * W / w.sum(1, keepdim=True)).view(B, H, W)
        """, "the same identity in two images is two different segments"),
    (5, """
        import torch
        from bits import int2bit

        def expected_bits(logits, scale=0.1):  # e in [0, 1], never scaled
            B, G, K, H, W = logits.shape
            n = K.bit_length() - 1
            e = torch.einsum("bgkhw,kn->bgnhw", logits.softmax(2), int2bit(torch.arange(K), n).float())
            return e.reshape(B, G * n, H, W)
        """, "expected bits must be scaled to [-b, b]: scale * (2e - 1)"),
    *[(5, EXPECTED_BITS.format(q=q, order="bgnhw"), hint) for q, hint in (
        ("logits.softmax(1)", "the softmax runs over the K entries of a group, dim 2"),
        ("logits.softmax(-1)", "the softmax runs over the K entries of a group, dim 2"),
        ("logits.exp()", "normalise exp(logits) by its sum over the K entries"),
        ("torch.nn.functional.one_hot(logits.argmax(2), K).permute(0, 1, 4, 2, 3).float()",
         "not the bits of the most likely entry"))],
    (5, EXPECTED_BITS.format(q="logits.softmax(2)", order="bnghw"), "group 0's n bits come first"),
    (6, (" - (p_pixels & gt_void).sum().item()", ""), "IoU uses union minus the prediction's pixels on gt void"),
    (6, ("(mask[..., 0] == c) & (mask[..., 1] == i)", "real & (mask[..., 1] == i)"),  # class ignored
     "a segment is the set of pixels sharing one (class, identity) pair: here pred 1.1"),
    (6, ("inter / union > 0.5", "inter / union >= 0.5"), "a match needs IoU > 0.5, strictly"),
    (6, ("gt_void = (gt[..., 0] == 0) | (gt[..., 1] == 0)", "gt_void = gt[..., 0] == 0"),
     "the prediction's pixels on 1.0 are forgiven"),
    (6, ("2 * (p_pixels & gt_void).sum() > p_pixels.sum()", "2 * (p_pixels & gt_void).sum() >= p_pixels.sum()"),
     "exactly half (here 2 of 4) is not enough"),
    (7, kernel("""
            x_t = tl.load(x_t_ptr + offs, mask=offs < N, other=0.0)
            x0 = tl.load(x_pred_ptr + offs, mask=offs < N, other=0.0)  # no clip
            tl.store(x_next_ptr + offs, alpha * x_t + beta * x0, mask=offs < N)
        """), "the kernel forgot the clip"),
    (7, kernel("""
            x_t = tl.load(x_t_ptr + offs)  # no mask: the last block runs past N
            x0 = tl.minimum(tl.maximum(tl.load(x_pred_ptr + offs), -scale), scale)
            tl.store(x_next_ptr + offs, alpha * x_t + beta * x0)
        """), "mask=offs < N"),
    (7, kernel("""
            x_t = tl.load(x_t_ptr + offs)  # loads unmasked (the checker's padding hides it), store masked
            x0 = tl.minimum(tl.maximum(tl.load(x_pred_ptr + offs), -scale), scale)
            tl.store(x_next_ptr + offs, alpha * x_t + beta * x0, mask=offs < N)
        """), "the last block reads past N: load with mask=offs < N (and other=0.0) too"),
    (7, kernel("""
            x_t = tl.load(x_t_ptr + offs, offs < N, 0.0)  # positional masks count
            x0 = tl.minimum(tl.maximum(tl.load(x_pred_ptr + offs, mask=offs < N), -scale), scale)
            tl.store(x_next_ptr + offs, alpha * x_t + beta * x0)
        """), "the last block writes past N: store with mask=offs < N"),
    (7, kernel("""
            x_t = tl.load(x_t_ptr + offs, mask=offs <= N, other=0.0)  # one element too far
            x0 = tl.minimum(tl.maximum(tl.load(x_pred_ptr + offs, mask=offs <= N, other=0.0), -scale), scale)
            tl.store(x_next_ptr + offs, alpha * x_t + beta * x0, mask=offs <= N)
        """), "written past the end"),
    (7, KERNEL_HEAD.replace("program_id(0) * BLOCK", "program_id(0) * (BLOCK - 1)") + """
    x_t = tl.load(x_t_ptr + offs, mask=offs < N, other=0.0)  # blocks overlap by one
    x0 = tl.minimum(tl.maximum(tl.load(x_pred_ptr + offs, mask=offs < N, other=0.0), -scale), scale)
    tl.store(x_next_ptr + offs, alpha * x_t + beta * x0, mask=offs < N)
""", "element 94 was never written"),
    (7, KERNEL_HEAD.replace("tl.program_id(0) * BLOCK + ", "") + """
    x_t = tl.load(x_t_ptr + offs, mask=offs < N, other=0.0)  # every program on the first block
    x0 = tl.minimum(tl.maximum(tl.load(x_pred_ptr + offs, mask=offs < N, other=0.0), -scale), scale)
    tl.store(x_next_ptr + offs, alpha * x_t + beta * x0, mask=offs < N)
""", "only the first block is right"),
]


def numbers():
    """Every exercise number; 7 (a Triton kernel) marked to skip where Triton is not installed."""
    return [pytest.param(n, marks=pytest.mark.triton) if n == 7 else n for n in sorted(EXERCISES)]


def solution(n):
    return os.path.join(SOLUTIONS, EXERCISES[n][0])


def check(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("n", numbers())
def test_reference_solution_passes(n, capsys):
    code, out = check(capsys, n, "--file", solution(n))
    assert code == 0, out
    assert "All checks pass" in out and "NOT YET" not in out


@pytest.mark.parametrize("n", numbers())
def test_untouched_template_is_not_written_yet(n, capsys):
    code, out = check(capsys, n)
    assert code == 1
    assert "not written yet: open " in out and EXERCISES[n][0] in out, out


def mistake_source(n, source):
    """A student file: source itself, or for (old, new) the solution with old replaced by new."""
    if isinstance(source, str):
        return textwrap.dedent(source)
    with open(solution(n)) as f:
        text = f.read()
    assert source[0] in text
    return text.replace(*source)


@pytest.mark.parametrize("n, source, hint", [pytest.param(*m, marks=[pytest.mark.triton] * (m[0] == 7)) for m in MISTAKES],
                         ids=[f"{m[0]}-{m[2][:30]}" for m in MISTAKES])
def test_typical_mistake_gets_its_hint(n, source, hint, tmp_path, capsys):
    path = tmp_path / EXERCISES[n][0]
    path.write_text(mistake_source(n, source))
    code, out = check(capsys, n, "--file", path)
    assert code == 1
    assert "NOT YET" in out and "expected:" in out and "got:" in out
    assert hint in out, out


def test_broken_files_and_bad_command_lines(tmp_path, capsys):
    bad = tmp_path / "syntax.py"
    bad.write_text("def int2bit(x, n=8)\n    return x\n")
    code, out = check(capsys, 1, "--file", bad)
    assert code == 1 and "does not load: SyntaxError" in out
    renamed = tmp_path / "renamed.py"
    renamed.write_text("from bits import int2bit\n")
    code, out = check(capsys, 1, "--file", renamed)
    assert code == 1 and "defines no bit2int" in out
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(0)\n")
    code, out = check(capsys, 1, "--file", exits)
    assert code == 1 and "does not load: it exits as it is imported" in out, out
    exits_later = tmp_path / "exits_later.py"
    exits_later.write_text("import sys\nfrom bits import int2bit\n\ndef bit2int(bits):\n    sys.exit(0)\n")
    code, out = check(capsys, 1, "--file", exits_later)
    assert code == 1 and "do not call sys.exit()" in out, out
    for argv in (["9"], ["one"], ["1", "--file", str(tmp_path / "missing.py")], ["1", "--file", str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("exercises.check: "), err
    assert "is a folder: give the .py file" in err


def test_command_line():
    result = subprocess.run([sys.executable, "-m", "exercises.check", "1", "--file",
                             os.path.join("exercises", "solutions", "01_bits.py")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks pass. Well done! Next: python -m exercises.check 2" in result.stdout
