"""Every Triton kernel equals its PyTorch reference (kernels/README.md lists the tolerances).

On the CPU the kernels run in Triton's interpreter (conftest.py sets TRITON_INTERPRET=1), so
shapes stay tiny and hypothesis draws few examples. With a GPU, `TRITON_INTERPRET=0 pytest
tests/test_kernels.py` compiles them and adds the bfloat16 cases.
"""
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bits
import diffusion
import kernels
import losses

if kernels.triton_problem():
    pytest.skip(kernels.triton_problem(), allow_module_level=True)
pytestmark = pytest.mark.triton

from kernels import bits as k_bits  # noqa: E402
from kernels import ddim as k_ddim  # noqa: E402
from kernels import softmax_ce as k_ce  # noqa: E402
from schedule import gamma  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
COMPILED = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
FAST = settings(max_examples=20, deadline=None)

# (B, H, W): empty batches, one pixel, odd sizes, and more pixels than one block of
# kernels.bits (1024) or kernels.ddim (2048 elements)
shapes = st.one_of(st.tuples(st.integers(0, 3), st.integers(1, 7), st.integers(1, 7)),
                   st.sampled_from([(0, 4, 4), (1, 1, 1), (1, 1, 1025), (2, 3, 347)]))


def random_mask(g, B, H, W, n_class_bits, n_identity_bits):
    def ids(n):  # ids in [0, 2**n)
        return torch.randint(0, 2 ** n, (B, H, W), generator=g)
    return torch.stack([ids(n_class_bits), ids(n_identity_bits)], -1).to(DEVICE)


# ---- bits ------------------------------------------------------------------------------

bit_counts = st.one_of(st.integers(1, 10), st.sampled_from([31, 32, 47, 62]))


@FAST
@given(shape=shapes, n_c=bit_counts, n_i=bit_counts, scale=st.sampled_from([0.1, 1.0, 0.37]),
       seed=st.integers(0, 2 ** 31))
def test_bits_equal_reference_exactly(shape, n_c, n_i, scale, seed):
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(g, *shape, n_c, n_i)
    m_bits = k_bits.mask_to_analog(mask, n_c, n_i, scale)
    assert m_bits.dtype == torch.float32
    assert torch.equal(m_bits, bits.mask_to_analog(mask, n_c, n_i, scale))
    assert torch.equal(k_bits.mask_to_analog(mask, n_c, n_i, scale, check=False), m_bits)
    assert torch.equal(k_bits.analog_to_mask(m_bits, n_c, n_i), mask)
    m = torch.randn(shape[0], n_c + n_i, *shape[1:], generator=g).to(DEVICE)
    m[m.abs() < 0.3] = 0.0  # exact zeros threshold to bit 0, as in the reference
    assert torch.equal(k_bits.analog_to_mask(m, n_c, n_i), bits.analog_to_mask(m, n_c, n_i))


def test_bits_int32_mask_and_nan():
    mask = torch.tensor([[[[5, 1], [0, 7]]]], dtype=torch.int32, device=DEVICE)
    assert torch.equal(k_bits.mask_to_analog(mask, 3, 3), bits.mask_to_analog(mask, 3, 3))
    m = torch.full((1, 6, 1, 1), float("nan"), device=DEVICE)
    assert torch.equal(k_bits.analog_to_mask(m, 3, 3), bits.analog_to_mask(m, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_analog_to_mask_in_the_input_precision(dtype):
    """Bits are thresholded in the input's own precision: a float64 1e-50 is a 1 bit (float32
    would flush it to 0); bfloat16 is compared after an exact upcast."""
    m = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(0)).to(DEVICE, dtype)
    if dtype == torch.float64:
        m[0, :, 0, 0] = torch.tensor([1e-50, -1e-50, 0.0, 5e-320, 1.0, -1.0], dtype=dtype)
    assert torch.equal(k_bits.analog_to_mask(m, 3, 3), bits.analog_to_mask(m, 3, 3))
    if dtype == torch.float64:
        assert k_bits.analog_to_mask(m, 3, 3)[0, 0, 0].tolist() == [1, 3]


def test_bits_bad_input():
    mask = torch.zeros(1, 2, 2, 2, dtype=torch.long, device=DEVICE)
    mask[0, 0, 0, 1] = 8
    with pytest.raises(ValueError, match="raise the bit count"):
        k_bits.mask_to_analog(mask, 3, 3)
    for bad in (mask.float(), mask[..., :1], mask[0]):
        with pytest.raises(ValueError, match="mask"):
            k_bits.mask_to_analog(bad, 3, 4, check=False)
    with pytest.raises(ValueError, match="n_class_bits"):
        k_bits.mask_to_analog(mask, 0, 4)
    with pytest.raises(ValueError, match="shape"):
        k_bits.analog_to_mask(torch.zeros(1, 5, 2, 2, device=DEVICE), 3, 3)


# ---- DDIM step -------------------------------------------------------------------------

times = st.floats(0.0, 1.0)


def ddim_reference(x_t, x_pred, t_now, t_next, scale):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIX2SEQD_KERNELS", "0")
        return diffusion.ddim_step(x_t, x_pred, t_now, t_next, scale)


@FAST
@given(shape=shapes, t_now=st.floats(0.01, 1.0), t_next=times, scale=st.sampled_from([0.1, 1.0]),
       seed=st.integers(0, 2 ** 31))
def test_ddim_equals_reference(shape, t_now, t_next, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(shape[0], 5, *shape[1:], generator=g).to(DEVICE)
    x_pred = (scale * 1.5 * torch.randn(x_t.shape, generator=g)).to(DEVICE)  # some outside [-b, b]
    x_next = k_ddim.ddim_step(x_t, x_pred, t_now, t_next, scale)
    # against the reference in float64 (the truth): a few fp32 roundings of the two terms
    ref = ddim_reference(x_t.double(), x_pred.double(), t_now, t_next, scale)
    g_now, g_next = gamma(t_now), gamma(t_next)
    alpha = math.sqrt((1 - g_next) / (1 - g_now))
    beta = math.sqrt(g_next) - alpha * math.sqrt(g_now)
    tol = 2 ** -21 * (alpha * x_t.double().abs() + abs(beta) * scale) + 1e-30
    assert ((x_next.double() - ref).abs() <= tol).all()
    # against the fp32 reference, whose eps loses ~1/sqrt(1 - g_now) ulps to cancellation
    ref32 = ddim_reference(x_t, x_pred, t_now, t_next, scale)
    tol32 = 2 ** -20 * (1 + x_t.abs()) / math.sqrt(1 - g_now)
    assert ((x_next - ref32).abs() <= tol32).all()


@FAST
@given(shape=shapes, t=times, t_now=st.floats(0.2, 1.0), seed=st.integers(0, 2 ** 31))
def test_ddim_properties(shape, t, t_now, seed):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(shape[0], 3, *shape[1:], generator=g).to(DEVICE)
    x_pred = (0.2 * torch.randn(x_t.shape, generator=g)).to(DEVICE)
    assert torch.equal(k_ddim.ddim_step(x_t, x_pred, t, t, 0.1), x_t)  # g_next == g_now: alpha=1, beta=0
    # t_next = 0: x_next = clip(x0) + alpha (x_t - sqrt(g_now) x0) with alpha <= 1.1e-3 for t_now >= 0.2
    x_next = k_ddim.ddim_step(x_t, x_pred, t_now, 0.0, 0.1)
    assert ((x_next - x_pred.clamp(-0.1, 0.1)).abs() <= 1.2e-3 * (x_t.abs() + 0.1)).all()


def test_ddim_dispatch_and_bad_input(monkeypatch):
    x_t, x_pred = torch.randn(2, 4, 3, 3, device=DEVICE), torch.randn(2, 4, 3, 3, device=DEVICE)
    monkeypatch.setenv("PIX2SEQD_KERNELS", "1")
    assert torch.equal(diffusion.ddim_step(x_t, x_pred, 0.7, 0.5, 0.1), k_ddim.ddim_step(x_t, x_pred, 0.7, 0.5, 0.1))
    monkeypatch.setenv("PIX2SEQD_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="PIX2SEQD_KERNELS"):
        kernels.enabled(x_t)
    with pytest.raises(ValueError, match="one shape"):
        k_ddim.ddim_step(x_t, x_pred[:1], 0.7, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        k_ddim.ddim_step(x_t, x_pred, 1.5, 0.5)
    with pytest.raises(ValueError, match="float32"):
        k_ddim.ddim_step(x_t.double(), x_pred.double(), 0.7, 0.5)
    with pytest.raises(ValueError, match="per-example times"):
        k_ddim.ddim_step(x_t, x_pred, torch.tensor([0.7, 0.6]), 0.5)
    assert torch.equal(k_ddim.ddim_step(x_t, x_pred, torch.tensor(0.75), 0.5), k_ddim.ddim_step(x_t, x_pred, 0.75, 0.5))


# ---- weighted softmax cross entropy + expected bits ------------------------------------

# (B, G, K, H, W); K = 8 is the tiny preset, 256 the paper's; tiles hold 4096 // K pixels, so
# H * W = 17 (K = 256) and 600 (K = 8) span more than one program per image
ce_shapes = st.one_of(
    st.tuples(st.integers(0, 2), st.integers(1, 3), st.sampled_from([2, 4, 8, 16]), st.integers(1, 5),
              st.integers(1, 5)),
    st.sampled_from([(1, 2, 256, 1, 17), (1, 2, 8, 1, 600), (1, 1, 2, 1, 1), (0, 2, 8, 3, 3)]))
CE_TOL = {"loss": dict(rtol=1e-5, atol=1e-5), "m_pred": dict(rtol=0, atol=1e-5),  # m_pred: times scale
          "grad": dict(rtol=1e-5, atol=1e-5)}  # float32


def assert_m_pred_close(m_pred, m_pred_ref, scale):
    torch.testing.assert_close(m_pred, m_pred_ref, rtol=0, atol=CE_TOL["m_pred"]["atol"] * scale)


def ce_inputs(g, B, G, K, H, W, dtype=torch.float32):
    logits = (3 * torch.randn(B, G, K, H, W, generator=g)).to(DEVICE, dtype).requires_grad_()
    target = torch.randint(0, K, (B, H, W, G), generator=g).to(DEVICE)
    identity = torch.randint(0, 3, (B, H, W), generator=g).to(DEVICE)
    weights = losses.size_weights(identity, 0.2) if B else torch.ones(0, H, W, device=DEVICE)  # it can't reshape B=0
    return logits, target, weights


def expected_bits_reference(logits, scale):
    B, G, K, H, W = logits.shape
    if B == 0:  # losses.expected_bits cannot reshape an empty batch
        return (logits.sum() * 0).expand(0, G * (K.bit_length() - 1), H, W)
    return losses.expected_bits(logits, scale)


def ce_reference(logits, target, weights, scale):
    return losses.softmax_ce(logits, target, weights), expected_bits_reference(logits, scale)


@FAST
@given(shape=ce_shapes, scale=st.sampled_from([0.1, 1.0]), use=st.sampled_from(["both", "loss", "m_pred"]),
       seed=st.integers(0, 2 ** 31))
def test_ce_equals_reference(shape, scale, use, seed):
    g = torch.Generator().manual_seed(seed)
    logits, target, weights = ce_inputs(g, *shape)
    loss, m_pred = k_ce.weighted_softmax_ce(logits, target, weights, scale)
    loss_ref, m_pred_ref = ce_reference(logits, target, weights, scale)
    torch.testing.assert_close(loss, loss_ref, **CE_TOL["loss"])
    assert_m_pred_close(m_pred, m_pred_ref, scale)
    outs, refs = {"both": ([loss, m_pred], [loss_ref, m_pred_ref]), "loss": ([loss], [loss_ref]),
                  "m_pred": ([m_pred], [m_pred_ref])}[use]
    d_outs = [torch.randn(o.shape, generator=g).to(DEVICE) for o in outs]
    grad, = torch.autograd.grad(outs, logits, d_outs)
    grad_ref, = torch.autograd.grad(refs, logits, d_outs)
    torch.testing.assert_close(grad, grad_ref, **CE_TOL["grad"])


@FAST
@given(shape=ce_shapes, seed=st.integers(0, 2 ** 31))
def test_ce_inference_gives_m_pred_only(shape, seed):
    logits, _, _ = ce_inputs(torch.Generator().manual_seed(seed), *shape)
    with torch.no_grad():
        loss, m_pred = k_ce.weighted_softmax_ce(logits, None, None, 0.1)
    assert loss is None
    assert_m_pred_close(m_pred, expected_bits_reference(logits, 0.1), 0.1)


@pytest.mark.parametrize("with_target", [True, False])
def test_ce_gradcheck_float64(with_target):
    g = torch.Generator().manual_seed(0)
    logits, target, weights = ce_inputs(g, 1, 2, 4, 2, 3, torch.float64)
    if with_target:  # the gradient wrt the weights too
        fn = lambda x, w: k_ce.weighted_softmax_ce(x, target, w, 0.3)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (logits, weights.double().requires_grad_()))
    else:
        fn = lambda x: k_ce.weighted_softmax_ce(x, None, None, 0.3)[1]  # noqa: E731
        assert torch.autograd.gradcheck(fn, (logits,))


@pytest.mark.parametrize("logits_need_grad", [True, False])
def test_ce_weight_gradient_equals_reference(logits_need_grad):
    """dL/dw = dL * CE as through losses.softmax_ce, with or without a gradient for the logits
    (forward saves lse only for the latter: backward must not read it then)."""
    logits, target, weights = ce_inputs(torch.Generator().manual_seed(2), 2, 2, 8, 3, 5)
    logits = logits.detach().requires_grad_(logits_need_grad)
    weights = weights.clone().requires_grad_()
    inputs = [weights, logits] if logits_need_grad else [weights]
    d_loss = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    grads = torch.autograd.grad(k_ce.weighted_softmax_ce(logits, target, weights, 0.1)[0], inputs, d_loss)
    refs = torch.autograd.grad(losses.softmax_ce(logits, target, weights), inputs, d_loss)
    for grad, ref in zip(grads, refs):
        torch.testing.assert_close(grad, ref, **CE_TOL["grad"])


def test_ce_bad_target_is_nan_not_a_sync():
    g = torch.Generator().manual_seed(1)
    logits, target, weights = ce_inputs(g, 1, 2, 8, 2, 2)
    target[0, 1, 1, 1] = 8
    loss, _ = k_ce.weighted_softmax_ce(logits, target, weights, 0.1)
    assert loss[0, 1, 1].isnan() and not loss[0, :1].isnan().any()
    grad, = torch.autograd.grad(loss.sum(), logits)
    assert grad[0, 1, :, 1, 1].isnan().all() and not grad[0, 0].isnan().any() and not grad[0, 1, :, 0].isnan().any()


def test_ce_bad_input():
    logits = torch.zeros(1, 2, 6, 2, 2, device=DEVICE)
    with pytest.raises(ValueError, match="2\\*\\*n"):
        k_ce.weighted_softmax_ce(logits, None, None)
    logits = torch.zeros(1, 2, 8, 2, 2, device=DEVICE)
    with pytest.raises(ValueError, match="target"):
        k_ce.weighted_softmax_ce(logits, torch.zeros(1, 2, 2, 1, dtype=torch.long), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="weights"):
        k_ce.weighted_softmax_ce(logits, torch.zeros(1, 2, 2, 2, dtype=torch.long, device=DEVICE), None)
    with pytest.raises(ValueError, match="logits"):
        k_ce.weighted_softmax_ce(logits[0], None, None)


@pytest.mark.skipif(not COMPILED, reason="bfloat16 needs a GPU (Triton's interpreter has no bf16)")
@pytest.mark.parametrize("K", [8, 256])
def test_ce_bfloat16_on_gpu(K):
    """bf16 logits are upcast in both: loss and m_pred as float32; the gradient is rounded to bf16."""
    g = torch.Generator().manual_seed(2)
    logits, target, weights = ce_inputs(g, 2, 2, K, 33, 31, torch.bfloat16)
    loss, m_pred = k_ce.weighted_softmax_ce(logits, target, weights, 0.1)
    loss_ref, m_pred_ref = ce_reference(logits, target, weights, 0.1)
    torch.testing.assert_close(loss, loss_ref, **CE_TOL["loss"])
    assert_m_pred_close(m_pred, m_pred_ref, 0.1)
    d_outs = [torch.randn_like(loss), torch.randn_like(m_pred)]
    grad, = torch.autograd.grad([loss, m_pred], logits, d_outs)
    grad_ref, = torch.autograd.grad([loss_ref, m_pred_ref], logits, d_outs)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad, grad_ref, rtol=2 ** -7, atol=1e-5)


def test_forcing_kernels_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("PIX2SEQD_KERNELS", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        kernels.enabled(torch.zeros(1))
    monkeypatch.setenv("PIX2SEQD_KERNELS", "auto")
    assert not kernels.enabled(torch.zeros(1))


def test_kernels_compile_for_h100():
    """The interpreter accepts what the GPU compiler may reject (KERNELS.md): compile every kernel
    variant for sm_90 without a GPU (Triton's own ptxas; ~10 s cold, cached after)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "kernels.bench", "--compile-only"], cwd=root, capture_output=True,
                         text=True, env={**os.environ, "TRITON_INTERPRET": "0"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_bench_bookkeeping_on_the_cpu(monkeypatch, tmp_path):
    """kernels.bench's timing table (cases, rows, JSON, plot) with the kernels in the interpreter and a
    stub clock: what a GPU session runs, minus the timing. Every implementation "takes" 1 ms, so
    every speed-up is 1 and GB/s is the bytes moved per ms."""
    import json

    from kernels import bench
    monkeypatch.setenv("PIX2SEQD_KERNELS", "0")  # the references take their PyTorch path, as in bench.main
    monkeypatch.setattr(bench, "bench", lambda fn: (fn(), 1.0)[1])
    monkeypatch.setattr(bench, "peak_mb", lambda fn: (fn(), 2.0)[1])
    monkeypatch.setattr(bench, "C", dict(m2a=bits.mask_to_analog, a2m=bits.analog_to_mask, ddim=diffusion.ddim_step,
                                         ce=bench.ce_train_ref, eb=losses.expected_bits))
    rows = bench.time_cases(bench.cases([(1, 8)], [(1, 4)], dev="cpu", dtypes=(torch.float32,)), copy_gbs=100.0)
    assert [r["kernel"] for r in rows] == ["mask_to_analog", "analog_to_mask", "ddim_step", "ce fwd+bwd",
                                           "ce infer (m_pred)"]
    for r in rows:
        assert r["speedup_eager"] == r["speedup_compile"] == 1.0 and r["gbps"] == pytest.approx(r["bytes"] * 1e-6)
    assert rows[3]["peak_mb"] == {"kernel": 2.0, "eager": 2.0, "compile": 2.0}
    json.dumps(rows)
    bench.plot(rows, 100.0, str(tmp_path / "bench.png"))
    assert (tmp_path / "bench.png").stat().st_size > 10_000
