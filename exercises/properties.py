"""The property checks of the exercises: check_NAME(mod) runs them on the student's module
(exercise 6's, the PQ matching, are in properties_pq.py).

Each check draws small inputs with hypothesis, computes the answer with the project's reference
(bits.py, schedule.py, diffusion.py, losses.py), and raises harness.Wrong for the
first (shrunk) mismatch with a hint; `mistakes` lists what a typical slip would return, so the
hint can name it. Each passing check prints one "ok" line.
"""
import ast
import inspect
import math
import os
import textwrap
from unittest import mock

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from exercises.harness import NotWritten, Wrong, call, expect, fmt, run, tensors


# ---- 1: int2bit / bit2int ---------------------------------------------------------------

def check_bits(mod):
    from bits import bit2int, int2bit
    msb = ("your bits come out most-significant-bit first: Alg. 3 puts the least significant bit "
           "first (bit j of x is (x >> j) & 1)")

    def bits_of_ints(nx):
        n, x = nx
        what = f"int2bit(torch.tensor({fmt(x)}), n={n})"
        want = int2bit(x, n).long()
        got = call(mod.int2bit, what, x, n)
        expect(what, want, got, "bit j of x is (x >> j) & 1, for j = 0 .. n-1, stacked on a new last axis",
               [(want.flip(-1), msb), (lambda g: bool((g > 1).any()), "a bit is 0 or 1: after shifting, keep "
                                       "only the last bit, (x >> j) & 1 (Alg. 3 takes it mod 2)")], integer=True)
    run(bits_of_ints, 60, nx=st.integers(1, 16).flatmap(
        lambda n: st.tuples(st.just(n), tensors(np.int64, st.integers(0, 2 ** n - 1)))))
    print("  ok  int2bit agrees with Alg. 3")

    overflow = ("return torch.long (int64), as the contract says: the sum of n bits needs n bits, and smaller "
                "int types overflow (in torch.int8, 200 becomes -56); take the place values and the bits as "
                "torch.long")

    def ints_of_bits(b):
        what = f"bit2int(torch.tensor({fmt(b)}))"
        want = bit2int(b)
        got = call(mod.bit2int, what, b)
        if isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype != torch.long:
            raise Wrong(what, f"torch.long: {fmt(want)}", f"{got.dtype}: {fmt(got)}", overflow)
        expect(what, want, got, "x = sum_j bits[..., j] * 2**j over the last axis", [
            (bit2int(b.flip(-1)), "you read the bits most-significant-bit first: bits[..., 0] is the least "
                                  "significant bit, worth 2**0 (Alg. 3)"),
            (lambda g: bool((g < 0).any()), overflow)], integer=True)
    shapes = st.tuples(array_shapes(min_dims=0, max_dims=2, max_side=3), st.integers(1, 16)).map(
        lambda s: (*s[0], s[1]))  # tiny leading axes, up to 16 bits
    run(ints_of_bits, 60, [{"b": torch.tensor([0, 0, 0, 1, 0, 0, 1, 1])}],  # 200: past int8
        b=tensors(np.int64, st.integers(0, 1), shape=shapes))
    print("  ok  bit2int agrees with Alg. 3")


# ---- 2: gamma and time_pairs ------------------------------------------------------------

def check_schedule(mod):
    from schedule import gamma
    formula = "gamma(t) = cos(((t + ns) / (1 + ds)) * pi / 2) ** 2 (Alg. 4)"

    def gamma_mistakes(want, t):
        plain = (torch.cos(t * math.pi / 2) ** 2) if isinstance(t, torch.Tensor) else math.cos(t * math.pi / 2) ** 2
        return [(want.sqrt(), "you return cos(...) but gamma is its square: cos(...) ** 2. Squared, it falls "
                              "smoothly from ~1 to ~0 and sqrt(gamma), sqrt(1 - gamma) are the cos and sin "
                              "of Eq. 1"),
                (1 - want, "you return 1 - gamma: gamma itself falls from ~1 at t = 0 to ~0 at t = 1"),
                (torch.as_tensor(plain, dtype=torch.float64),
                 f"the offsets ns and ds are missing: {formula}; they keep gamma(0) < 1 so that 1 - gamma(t) "
                 "never divides by zero")]

    def on_floats(t, kw):
        what = f"gamma({t!r}{''.join(f', {k}={v}' for k, v in kw.items())})"
        want = torch.tensor(gamma(t, **kw), dtype=torch.float64)
        got = call(mod.gamma, what, t, **kw, hint="gamma must accept a Python float t (and keep the keyword "
                   "arguments ns=0.0002, ds=0.00025): use math.cos for floats")
        single = getattr(got, "dtype", torch.float64) not in (torch.float64, np.float64)  # a float32 tensor
        try:
            got = torch.tensor(float(got), dtype=torch.float64)
        except (TypeError, ValueError):
            raise Wrong(what, f"a float: {fmt(want)}", f"{type(got).__name__}: {fmt(got)}",
                        "return a float") from None
        float32 = (lambda g: single and bool(torch.isclose(g, want, 1e-3, 1e-6).all()),
                   "for a Python float t return a Python float computed with math.cos (a float32 tensor loses "
                   "digits)")
        expect(what, want, got, formula, [float32] + gamma_mistakes(want, t), rtol=1e-7, atol=1e-15)
    params = st.sampled_from([{}, {"ns": 0.01, "ds": 0.02}])
    run(on_floats, 60, t=st.floats(0, 1), kw=params)
    print("  ok  gamma(t) on floats follows Alg. 4")

    def on_tensors(t):
        what = f"gamma(torch.tensor({fmt(t)}, dtype=torch.float64))"
        want = gamma(t)
        tensor_hint = ("gamma must work on tensors too (the model calls it on a batch of times): use torch.cos "
                       "when t is a tensor, math.cos when it is a float")
        got = call(mod.gamma, what, t, hint=tensor_hint)
        if not isinstance(got, torch.Tensor):
            raise Wrong(what, f"a tensor: {fmt(want)}", f"{type(got).__name__}: {fmt(got)}", tensor_hint)
        expect(what, want, got, formula, gamma_mistakes(want, t), rtol=1e-6, atol=1e-12)
    run(on_tensors, 20, t=tensors(np.float64, st.floats(0, 1), max_dims=1))
    print("  ok  gamma(t) on tensors follows Alg. 4")

    check_time_pairs(mod)


def check_time_pairs(mod):
    """Exercise 2, second half: Alg. 2's asymmetric time pairs."""
    from schedule import time_pairs

    def pairs(steps, td):
        what = f"time_pairs(steps={steps}, td={td})"
        want = torch.tensor(time_pairs(steps, td), dtype=torch.float64)
        got = call(mod.time_pairs, what, steps, td)
        try:
            got = torch.tensor([[float(a), float(b)] for a, b in got], dtype=torch.float64)
        except (TypeError, ValueError):
            raise Wrong(what, fmt(want.tolist()), fmt(got),
                        "return a list of (t_now, t_next) pairs of floats") from None
        if len(got) != steps:
            raise Wrong(what, fmt(want.tolist()), fmt(got.tolist()),
                        f"one (t_now, t_next) pair per step: {steps} pairs")
        s = torch.arange(steps, dtype=torch.float64)
        rule = "Alg. 2: t_now = 1 - s/steps, t_next = max(1 - (s + 1 + td)/steps, 0), s = 0..steps-1"
        expect(what, want, got, rule, [
            (torch.tensor(time_pairs(steps, 0.0), dtype=torch.float64),
             "td is missing: t_next should be 1 - (s + 1 + td)/steps (Alg. 2's asymmetric time difference)"),
            (torch.stack([1 - s / steps, 1 - (s + 1 + td) / steps], 1),
             "t_next must not go below 0: t_next = max(1 - (s + 1 + td)/steps, 0)"),
            (lambda g: abs(g[0, 0] - 1) > 1e-12, "the first step starts from pure noise: t_now = 1 - s/steps, "
                                                  "which is 1 for s = 0")], atol=1e-12)
    run(pairs, 60, steps=st.integers(1, 25), td=st.sampled_from([0.0, 1.0, 2.0, 0.5, 3.7]))
    print("  ok  time_pairs follows Alg. 2")


# ---- 3: the DDIM step -------------------------------------------------------------------

def ddim_cases(shapes):
    """(x_t, x_pred, t_now, t_next, scale): float32, x_pred reaching past [-b, b] so the clip matters."""
    return st.tuples(shapes, st.sampled_from([0.1, 1.0, 0.5]), st.floats(0.1, 1),
                     st.floats(0, 1)).flatmap(lambda c: st.tuples(
                         arrays(np.float32, c[0], elements=st.floats(-2, 2, width=32)).map(torch.from_numpy),
                         arrays(np.float32, c[0], elements=st.floats(-3, 3, width=32)).map(
                             lambda a: torch.from_numpy(a * np.float32(c[1]))),
                         st.just(c[2]), st.just(c[2] * c[3]), st.just(c[1])))


CLIP_HINT = "x0 must be clipped to [-b, b] before eps is computed (Alg. 4: x_pred = clip(x_pred, -scale, scale))"


def reference_ddim(x_t, x_pred, t_now, t_next, scale):
    """diffusion.ddim_step in plain PyTorch (whatever PIX2SEQD_KERNELS says); scale=math.inf: without the clip."""
    from diffusion import ddim_step
    with mock.patch.dict(os.environ, {"PIX2SEQD_KERNELS": "0"}):
        return ddim_step(x_t, x_pred, t_now, t_next, scale)


def ddim_mistakes(x_t, x_pred, t_now, t_next, scale):
    """[(what a typical slip in Alg. 4 returns, hint)]. alg4 spells the step out only to build the
    slips (x0_eps enters eps, x0_next enters x_next); the right answer comes from diffusion.py."""
    from schedule import gamma

    def alg4(x0_eps, x0_next, g_now, g_next):
        eps = (x_t.double() - math.sqrt(g_now) * x0_eps) / math.sqrt(1 - g_now)
        return math.sqrt(g_next) * x0_next + math.sqrt(1 - g_next) * eps
    x_pred = x_pred.double()
    x0 = x_pred.clamp(-scale, scale)
    g_now, g_next = gamma(t_now), gamma(t_next)
    g32_now, g32_next = float(np.float32(g_now)), float(np.float32(g_next))
    out = [(alg4(x_pred, x_pred, g_now, g_next), CLIP_HINT),
           (alg4(x_pred, x0, g_now, g_next), CLIP_HINT + ": you clipped it for x_next but not for eps"),
           (alg4(x0, x_pred, g_now, g_next), CLIP_HINT + ": you clipped it for eps but not for x_next")]
    if g32_now < 1:
        out.append((alg4(x0, x0, g32_now, g32_next), "compute the gamma terms in float64 (Python floats and "
                    "math.sqrt): in float32, 1 - gamma(t) near t = 0 (about 1e-7) loses most of its digits"))
    if g_next < 1:
        out.append((alg4(x0, x0, g_next, g_now), "gamma_now = gamma(t_now) goes into eps (the noise in x_t), "
                    "gamma_next = gamma(t_next) into x_next"))
    out.append((x_t, "you returned x_t unchanged: eps must use gamma_now = gamma(t_now)"))
    return out


def check_ddim(mod):
    def step(case):
        x_t, x_pred, t_now, t_next, scale = case
        what = (f"ddim_step(x_t=torch.tensor({fmt(x_t)}), x_pred=torch.tensor({fmt(x_pred)}), "
                f"t_now={t_now!r}, t_next={t_next!r}, scale={scale})")
        want = reference_ddim(x_t, x_pred, t_now, t_next, scale)
        args = x_t.clone(), x_pred.clone()
        got = call(mod.ddim_step, what, *args, t_now, t_next, scale)
        for name, before, after in zip(("x_t", "x_pred"), (x_t, x_pred), args):
            if not torch.equal(before, after):
                raise Wrong(what, f"{name} unchanged: {fmt(before)}", f"{name} changed to {fmt(after)}",
                            "do not modify the inputs in place (clamp_, -=, /= write into the caller's tensors)")
        expect(what, want, got, "Alg. 4: x0 = clip(x_pred, -b, b); eps = (x_t - sqrt(gamma_now) x0) / sqrt(1 - "
               "gamma_now); x_next = sqrt(gamma_next) x0 + sqrt(1 - gamma_next) eps, gamma = schedule.gamma",
               ddim_mistakes(x_t, x_pred, t_now, t_next, scale), rtol=1e-4, atol=1e-5)
    x_t, x_pred = torch.tensor([0.5, -0.2]), torch.tensor([0.3, -0.05])  # x_pred[0] beyond +-b
    run(step, 50, [{"case": (x_t, x_pred, 0.7, 0.3, 0.1)}], case=ddim_cases(array_shapes(max_dims=2, max_side=4)))
    print("  ok  ddim_step follows Alg. 4")


# ---- 4: size weights --------------------------------------------------------------------

def check_size_weights(mod):
    from losses import size_weights

    def normalise(w):
        return w * w[0].numel() / w.sum((1, 2), keepdim=True)

    void_hint = "void pixels (identity 0) are one segment too: weight them 1/c**p like any other segment"

    def weights(identity, p):
        B, H, W = identity.shape
        what = f"size_weights(torch.tensor({fmt(identity)}), p={p})"
        want = size_weights(identity, p)
        got = call(mod.size_weights, what, identity.clone(), p)
        void = identity == 0
        if isinstance(got, torch.Tensor) and got.shape == want.shape:
            g = got.detach().double()
            sums = g.sum((1, 2))
            if not torch.allclose(sums, torch.full_like(sums, H * W), rtol=1e-4):
                batch = abs(float(sums.sum()) - B * H * W) < 1e-3 * B * H * W
                void_zero = bool(void.any() and ((g == 0) | g.isnan())[void].all() and g[~void].isfinite().all())
                raise Wrong(what, f"{fmt(want)} (each image sums to H*W = {H * W})",
                            f"{fmt(got)} (sums {fmt(sums)})", void_hint if void_zero else
                            "you normalised over the whole batch: normalise each image on its own" if batch else
                            "weights must sum to H*W per image: w' = H*W * w / sum(w) over the image's pixels")
        flat = identity.reshape(B, -1)
        c = (flat[:, :, None] == flat[:, None, :]).sum(-1).double().view(B, H, W)  # segment size per pixel
        c_batch = (flat.reshape(-1)[:, None] == flat.reshape(-1)[None, :]).sum(-1).double().view(B, H, W)
        w_rest = c ** -p * ~void  # void at weight 0, or kept at 1 while the others share the rest
        rest = H * W - void.sum((1, 2), keepdim=True)
        expect(what, want, got, "w = 1 / c**p with c the pixel count of the pixel's segment in its image (void, "
               "identity 0, is one segment too), then w' = H*W * w / sum(w) per image", [
                   (normalise(c ** p), "w = 1 / c**p: pixels of small segments get the larger weights"),
                   (normalise((c + 1) ** -p), "the paper weights by 1 / c**p; (c + 1) is the official code's "
                                              "variant"),
                   (normalise(c_batch ** -p), "the same identity in two images is two different segments: "
                                              "count per image"),
                   (normalise(w_rest), void_hint),
                   (normalise(torch.where(void, 1.0, c ** -p)), void_hint),
                   (torch.where(void, 1.0, rest * w_rest / w_rest.sum((1, 2), keepdim=True)), void_hint)],
               rtol=1e-4)
    run(weights, 60, identity=tensors(np.int64, st.integers(0, 3), min_dims=3, max_dims=3),
        p=st.sampled_from([0.2, 1.0, 0.5, 0.0]))
    print("  ok  size_weights follows Sec. 3.2")


# ---- 5: expected bits -------------------------------------------------------------------

def check_expected_bits(mod):
    from bits import int2bit
    from losses import expected_bits

    def bits(logits, scale):
        B, G, K, H, W = logits.shape
        what = f"expected_bits(logits of shape {list(logits.shape)} = torch.tensor({fmt(logits)}), scale={scale})"
        want = expected_bits(logits, scale)
        got = call(mod.expected_bits, what, logits.clone(), scale)
        e = (want / scale + 1) / 2  # the expected 0/1 bits
        n = K.bit_length() - 1
        table = int2bit(torch.arange(K), n).double()

        def m_pred(q):  # the analog bits of probabilities q: float[B, G, K, H, W]
            return scale * (2 * torch.einsum("bgkhw,kn->bgnhw", q, table).reshape(want.shape) - 1)
        axis = "the softmax runs over the K entries of a group, dim 2"
        x = logits.double()
        expect(what, want, got, "m_pred[:, g*n + j] = scale * (2 * sum_k softmax(logits[:, g])_k * bit_j(k) - 1), "
               "the softmax over the K entries of group g (dim 2)", [
                   (e, "expected bits must be scaled to [-b, b]: scale * (2e - 1), e the expected 0/1 bit"),
                   (scale * e, "expected bits must be scaled to [-b, b]: scale * (2e - 1), not scale * e"),
                   (2 * e - 1, "expected bits must be scaled to [-b, b]: multiply 2e - 1 by scale"),
                   (want.view(B, G, n, H, W).flip(2).reshape(want.shape),
                    "within each group the bits go least significant first (Alg. 3): bit_j(k) = (k >> j) & 1"),
                   (want.view(B, G, n, H, W).transpose(1, 2).reshape(want.shape),
                    "group 0's n bits come first: reshape [B, G, n, H, W] to [B, G*n, H, W]"),
                   (m_pred(x.softmax(1)), axis),
                   (m_pred(x.softmax(-1)), axis),
                   (m_pred(x.exp()), "q_k = softmax(logits)_k: normalise exp(logits) by its sum over the K "
                                     "entries of the group (dim 2)"),
                   (lambda g: bool(torch.isclose(g.abs(), torch.tensor(float(scale), dtype=g.dtype)).all()),
                    "take the expectation of each bit under the softmax, sum_k q_k * bit_j(k), not the bits of "
                    "the most likely entry")], rtol=1e-4, atol=1e-6)
    shapes = st.tuples(st.integers(1, 2), st.integers(1, 2), st.sampled_from([2, 4, 8]), st.integers(1, 2),
                       st.integers(1, 3))
    # two groups, two pixels in a row, uneven logits: the softmax over dim 1, over dim -1 and bare exp() all differ
    logits = torch.tensor([[[[[0.5, -1.0]], [[1.0, 0.0]]], [[[2.0, 0.0]], [[-0.5, 1.5]]]]])
    run(bits, 40, [{"logits": logits, "scale": 0.1}],
        logits=tensors(np.float32, st.floats(-4, 4, width=32), shape=shapes),
        scale=st.sampled_from([0.1, 1.0]))
    print("  ok  expected_bits follows Sec. 3.2")


# ---- 7: the DDIM step as a Triton kernel ------------------------------------------------

KERNEL_BLOCK = 32  # small, so that tiny tensors still span several programs


def launch(kernel, x_t, x_pred, t_now, t_next, scale):
    """Run the student's kernel as kernels/ddim.py does, on buffers padded to whole blocks:
    returns (x_next float[N], tail): tail is what the kernel left past N (NaN if untouched)."""
    import triton
    from schedule import gamma
    g_now, g_next = gamma(t_now), gamma(t_next)
    alpha = math.sqrt((1 - g_next) / (1 - g_now))
    beta = math.sqrt(g_next) - alpha * math.sqrt(g_now)
    N = x_t.numel()
    grid = triton.cdiv(N, KERNEL_BLOCK)
    device = "cuda" if os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
    pad = torch.zeros(grid * KERNEL_BLOCK - N)
    x_next = torch.full((grid * KERNEL_BLOCK,), math.nan, device=device)
    kernel[(grid,)](torch.cat([x_t, pad]).to(device), torch.cat([x_pred, pad]).to(device), x_next, N,
                    alpha, beta, float(scale), KERNEL_BLOCK)
    return x_next[:N].cpu(), x_next[N:].cpu()


def unmasked_access(fn):
    """The first tl.load / tl.store in fn's source that passes no mask (keyword or positional):
    (line in the file, "load" or "store", its text), or None."""
    lines, first = inspect.getsourcelines(fn)
    source = textwrap.dedent("".join(lines))
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "store"):
            slot = 1 if node.func.attr == "load" else 2  # tl.load(pointer, mask, ...), tl.store(pointer, value, mask)
            mask = next((k.value for k in node.keywords if k.arg in ("mask", None)),  # None: **kwargs, trusted
                        node.args[slot] if len(node.args) > slot else None)
            if mask is None or isinstance(mask, ast.Constant) and mask.value is None:
                found.append((first + node.lineno - 1, node.func.attr, ast.get_source_segment(source, node)))
    return min(found, default=None)


def elements(indices, most=6):
    """[94] -> 'element 94'; [0, 1, 2, 5, 94] -> 'elements 0..2, 5, 94' (at most `most` runs, then '...')."""
    runs = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [f"{a}..{b}" if b > a else f"{a}" for a, b in runs]
    return ("element " if len(indices) == 1 else "elements ") + ", ".join(text[:most]) + (
        ", ..." if len(text) > most else "")


def check_triton_ddim(mod):
    kernel = mod.ddim_step_kernel
    fn = getattr(kernel, "fn", kernel)
    if "raise NotImplementedError" in inspect.getsource(fn):
        raise NotWritten("the body of ddim_step_kernel")  # on a GPU the compiler would reject `raise`
    unmasked = unmasked_access(fn)
    if unmasked:  # the padded buffers below hide reads past N; on a GPU they may fault or read garbage
        line, kind, text = unmasked
        file = os.path.relpath(inspect.getsourcefile(fn))
        raise Wrong(f"ddim_step_kernel, line {line} of {inspect.getsourcefile(fn) if file.startswith('..') else file}: "
                    f"{text}",
                    f"tl.{kind}(..., mask=offs < N)", "no mask", "the last block reads past N: load with mask=offs < N "
                    "(and other=0.0) too" if kind == "load" else "the last block writes past N: store with "
                    "mask=offs < N")

    def step(case):
        x_t, x_pred, t_now, t_next, scale = case
        N = x_t.numel()
        what = (f"ddim_step_kernel on N={N} elements in blocks of BLOCK={KERNEL_BLOCK}, x_t=torch.tensor("
                f"{fmt(x_t, 100)}), x_pred=torch.tensor({fmt(x_pred, 100)}), t_now={t_now!r}, t_next={t_next!r}, "
                f"scale={scale}")
        want = reference_ddim(x_t, x_pred, t_now, t_next, scale)
        got, tail = call(launch, what, kernel, x_t, x_pred, t_now, t_next, scale,
                         hint="the kernel raised an error: read its message, and compare your calls with the "
                         "skeleton in the exercise's docstring")
        if not tail.isnan().all():
            raise Wrong(what, f"nothing written past element {N - 1}", f"{len(tail) - int(tail.isnan().sum())} "
                        "element(s) written past the end", "the last block runs past N: store (and load) with "
                        "mask=offs < N")
        bad = ~torch.isclose(got.double(), want.double(), 1e-4, 1e-5)
        wrong, unwritten = bad.nonzero().flatten().tolist(), got.isnan().nonzero().flatten().tolist()
        expect(what, want, got, f"{elements(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong: load x_t "
               "and x_pred at offs = program_id(0) * BLOCK + arange(0, BLOCK), clip x0 to [-scale, scale], store "
               "alpha * x_t + beta * x0 at the same offsets", [
                   (reference_ddim(x_t, x_pred, t_now, t_next, math.inf), "the kernel forgot the clip: x0 = "
                    "tl.minimum(tl.maximum(x0, -scale), scale) before the update (Alg. 4)"),
                   (lambda g: not bad[:KERNEL_BLOCK].any() and bool(bad[KERNEL_BLOCK:].all()),
                    "only the first block is right: every program must start at tl.program_id(0) * BLOCK"),
                   (lambda g: bool(unwritten), f"{elements(unwritten)} {'was' if len(unwritten) == 1 else 'were'} "
                    "never written: each of "
                    "the cdiv(N, BLOCK) programs must store the BLOCK elements starting at tl.program_id(0) * BLOCK")],
               rtol=1e-4, atol=1e-5)
    one = torch.tensor([0.5]), torch.tensor([0.3])  # one element, its x_pred beyond +-b
    N = 3 * KERNEL_BLOCK - 1  # the last block partly past N; blocks that overlap by one leave element N-1 unwritten
    many = torch.linspace(-1, 1, N), torch.linspace(-0.25, 0.25, N)
    run(step, 15, [{"case": (*one, 0.7, 0.3, 0.1)}, {"case": (*many, 0.7, 0.3, 0.1)}],
        case=ddim_cases(st.integers(1, 3 * KERNEL_BLOCK + 5).map(lambda n: (n,))))
    print("  ok  the kernel matches diffusion.ddim_step")
