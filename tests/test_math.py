"""The paper's formulas, checked exactly where the math is exact: Alg. 3 (bits), Alg. 4 (gamma,
DDIM), Alg. 2 (time pairs), Eq. 1 (corruption), Sec. 3.2 (size weights, expected bits)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bits import analog_to_mask, bit2int, int2bit, mask_to_analog
from diffusion import corrupt, ddim_step
from identities import majority_vote, match_identities
from losses import expected_bits, size_weights, softmax_ce
from schedule import gamma, snr, time_pairs

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(n=st.integers(1, 62), data=st.data())
def test_int2bit_bit2int_round_trip(n, data):
    values = data.draw(st.lists(st.integers(0, 2 ** n - 1), min_size=1, max_size=20))
    x = torch.tensor(values, dtype=torch.long)
    bits = int2bit(x, n)
    assert bits.shape == (len(values), n) and set(bits.unique().tolist()) <= {0, 1}
    assert torch.equal(bit2int(bits), x)
    assert torch.equal(bits[:, 0].long(), x % 2)  # least significant bit first (Alg. 3)


def test_int2bit_rejects_values_out_of_budget():
    with pytest.raises(ValueError, match="fit in 3 bits"):
        int2bit(torch.tensor([8]), 3)
    with pytest.raises(ValueError, match="fit in 3 bits"):
        int2bit(torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="integer"):
        int2bit(torch.tensor([1.0]), 3)


def test_narrow_integer_masks_give_the_same_bits():
    """The range checks compare Python ints: 2**8 in a uint8 tensor would wrap to 0."""
    mask = torch.randint(0, 256, (2, 3, 4, 2))
    for dtype in (torch.uint8, torch.int16, torch.int32):
        assert torch.equal(mask_to_analog(mask.to(dtype)), mask_to_analog(mask))
    assert int2bit(torch.tensor([255], dtype=torch.uint8), 8).tolist() == [[1] * 8]
    assert int2bit(torch.tensor([5], dtype=torch.int32), 40).sum() == 2


def test_int2bit_and_bit2int_take_python_ints_lists_and_numpy():
    assert int2bit(6, 3).tolist() == [0, 1, 1]  # LSB first
    assert int2bit([1, 4], 3).tolist() == [[1, 0, 0], [0, 0, 1]]
    assert bit2int([0, 1, 1]).item() == 6
    assert bit2int(np.array([[0.1, -0.1, 0.1]])).tolist() == [5]  # analog bits threshold at 0


def random_mask(rng, B, H, W, nc, ni):
    return torch.stack([torch.from_numpy(rng.integers(0, 2 ** nc, (B, H, W))),
                        torch.from_numpy(rng.integers(0, 2 ** ni, (B, H, W)))], -1)


@FAST
@given(nc=st.integers(1, 8), ni=st.integers(1, 8), scale=st.sampled_from([0.03, 0.1, 1.0]),
       seed=st.integers(0, 2 ** 31))
def test_analog_bits_are_exactly_plus_minus_b_and_round_trip(nc, ni, scale, seed):
    mask = random_mask(np.random.default_rng(seed), 2, 3, 5, nc, ni)
    m = mask_to_analog(mask, nc, ni, scale)
    assert m.shape == (2, nc + ni, 3, 5)
    b = torch.tensor(scale).item()  # scale rounded to float32
    assert set(m.unique().tolist()) <= {-b, b} and m.dtype == torch.float32
    assert torch.equal(m[:, 0], (mask[..., 0] % 2 * 2 - 1).float() * scale)  # class bits first, LSB first
    assert torch.equal(analog_to_mask(m, nc, ni), mask)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 4, 4, dtype=torch.long), r"\[B, H, W, 2\]"),
    (torch.zeros(1, 4, 4, 2), "integer"),
    (torch.full((1, 4, 4, 2), 9), "class ids span"),
])
def test_mask_to_analog_rejects_bad_masks(bad, match):
    with pytest.raises(ValueError, match=match):
        mask_to_analog(bad, 3, 3)


def alg4_gamma(t, ns=0.0002, ds=0.00025):  # App. A, Alg. 4, transcribed
    return np.cos(((t + ns) / (1 + ds)) * np.pi / 2) ** 2


def test_gamma_endpoints_monotone_and_equal_to_alg4():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    g = gamma(t)
    assert g[0] > 0.9999999 and g[-1] < 1e-6
    assert (g[1:] < g[:-1]).all()
    assert np.allclose(g.numpy(), alg4_gamma(t.numpy()), rtol=0, atol=1e-15)
    assert gamma(0.3) == pytest.approx(alg4_gamma(0.3), abs=1e-15)


def test_snr_is_signal_over_noise_power_of_corrupted_bits():
    """gamma b^2 / (1 - gamma), measured: the variance of corrupt(+-b bits) splits into sqrt(gamma) b
    of signal and sqrt(1 - gamma) eps of noise; b = 0.1 has 100x less SNR than b = 1 at every t."""
    g = torch.Generator().manual_seed(0)
    for t, b in ((0.3, 1.0), (0.6, 0.1)):
        m_bits = b * (2 * torch.randint(0, 2, (1, 4, 64, 64), generator=g).double() - 1)
        noise = corrupt(m_bits, torch.tensor([t]), torch.randn(m_bits.shape, generator=g, dtype=torch.float64))
        noise = noise - math.sqrt(gamma(t)) * m_bits
        assert snr(t, b) == pytest.approx(gamma(t) * b ** 2 / noise.var().item(), rel=0.05)
        assert snr(t, b) == gamma(t) * b ** 2 / (1 - gamma(t))
    assert snr(0.5, 0.1) == pytest.approx(snr(0.5, 1.0) / 100, rel=1e-12)


@FAST
@given(steps=st.integers(1, 100), td=st.floats(0, 10))
def test_time_pairs_follow_alg2(steps, td):
    pairs = time_pairs(steps, td)
    assert len(pairs) == steps
    for step, (t_now, t_next) in enumerate(pairs):
        assert t_now == 1 - step / steps
        assert t_next == max(1 - (step + 1 + td) / steps, 0)
    assert pairs[-1][1] == 0


def test_corrupt_is_eq1():
    torch.manual_seed(0)
    m_bits, eps, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0.0, 0.5, 1.0])
    expected = torch.stack([math.sqrt(alg4_gamma(ti)) * m_bits[i] + math.sqrt(1 - alg4_gamma(ti)) * eps[i]
                            for i, ti in enumerate(t.tolist())])
    assert torch.allclose(corrupt(m_bits, t, eps), expected, atol=1e-6)


def test_corrupt_takes_one_time_for_all_or_one_per_example():
    torch.manual_seed(0)
    m_bits, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    per_example = corrupt(m_bits, torch.full((3,), 0.4), eps)
    assert torch.equal(corrupt(m_bits, 0.4, eps), per_example)
    assert torch.equal(corrupt(m_bits, torch.tensor(0.4), eps), per_example)


def test_ddim_step_takes_one_time_per_example():
    """float[B] times step each example as its own scalar times do (float64 inside: to 1e-6)."""
    torch.manual_seed(0)
    x_t, x_pred = torch.randn(3, 4, 2, 2), 0.2 * torch.randn(3, 4, 2, 2)
    t_now, t_next = [0.9, 0.5, 0.2], [0.7, 0.5, 0.0]
    got = ddim_step(x_t, x_pred, torch.tensor(t_now), torch.tensor(t_next), 0.1)
    assert got.dtype == x_t.dtype
    for i in range(3):
        torch.testing.assert_close(got[i], ddim_step(x_t[i:i + 1], x_pred[i:i + 1], t_now[i], t_next[i], 0.1)[0],
                                   rtol=0, atol=1e-6)
    assert torch.equal(got[1], x_t[1])  # g_next == g_now: nothing to remove


def alg4_ddim_step(x_t, x_pred, t_now, t_next, scale):  # App. A, Alg. 4, transcribed
    g_now, g_next = alg4_gamma(t_now), alg4_gamma(t_next)
    x_pred = np.clip(x_pred, -scale, scale)
    eps = 1 / np.sqrt(1 - g_now) * (x_t - np.sqrt(g_now) * x_pred)
    return np.sqrt(g_next) * x_pred + np.sqrt(1 - g_next) * eps


@FAST
@given(t_now=st.floats(0.05, 1), frac=st.floats(0, 1), scale=st.sampled_from([0.1, 1.0]), seed=st.integers(0, 99))
def test_ddim_step_matches_alg4(t_now, frac, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x_t, x_pred = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t_next = t_now * frac
    got = ddim_step(x_t, x_pred, t_now, t_next, scale)
    assert np.allclose(got.numpy(), alg4_ddim_step(x_t.numpy(), x_pred.numpy(), t_now, t_next, scale), atol=1e-9)


def ddpm_posterior(x_t, x0, t_now, t_next):  # q(x_next | x_t, x0) of DDPM (Ho et al. 2020, Eq. 7)
    g_now, g_next = alg4_gamma(t_now), alg4_gamma(t_next)
    a = g_now / g_next  # the signal kept from t_next to t_now
    mean = (np.sqrt(g_next) * (1 - a) * x0 + np.sqrt(a) * (1 - g_next) * x_t) / (1 - g_now)
    return mean, (1 - g_next) / (1 - g_now) * (1 - a)


@FAST
@given(t_now=st.floats(0.05, 1), frac=st.floats(0, 0.95), seed=st.integers(0, 99))
def test_ddim_step_at_eta_1_draws_from_the_ddpm_posterior(t_now, frac, seed):
    """eta = 1: x_next = posterior mean + posterior std * noise, exactly (given the noise), for an
    x_pred inside [-b, b] (the clip leaves it alone)."""
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    x0 = 0.1 * (2 * torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) - 1)
    z = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    t_next = t_now * frac
    got = ddim_step(x_t, x0, t_now, t_next, 0.1, eta=1.0, noise=z)
    mean, var = ddpm_posterior(x_t.numpy(), x0.numpy(), t_now, t_next)
    assert np.allclose(got.numpy(), mean + np.sqrt(var) * z.numpy(), atol=1e-9)


def test_ddim_step_eta_scales_the_fresh_noise_and_is_checked():
    """eta = 0 ignores the noise (Alg. 4); between 0 and 1 the fresh noise's variance is eta^2 that of
    eta = 1; eta outside [0, 1] is refused."""
    torch.manual_seed(0)
    x_t, x0, z = torch.randn(2, 6, 4, 4, dtype=torch.float64), torch.zeros(2, 6, 4, 4, dtype=torch.float64), \
        torch.randn(2, 6, 4, 4, dtype=torch.float64)
    assert torch.equal(ddim_step(x_t, x0, 0.8, 0.6, 0.1, eta=0.0, noise=z), ddim_step(x_t, x0, 0.8, 0.6, 0.1))
    var = {e: (ddim_step(x_t, x0, 0.8, 0.6, 0.1, eta=e, noise=z) - ddim_step(x_t, x0, 0.8, 0.6, 0.1, eta=e,
                                                                            noise=torch.zeros_like(z))) / z
           for e in (0.5, 1.0)}
    torch.testing.assert_close(var[0.5] ** 2, 0.25 * var[1.0] ** 2, rtol=1e-9, atol=0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="eta must be in"):
            ddim_step(x_t, x0, 0.8, 0.6, 0.1, eta=bad)


def test_ddim_step_recovers_true_x0_at_t_next_zero():
    torch.manual_seed(0)
    x0 = mask_to_analog(torch.randint(0, 8, (2, 4, 4, 2)), 3, 3, 0.1).double()
    for t_now in (0.2, 0.7, 1.0):
        x_t = corrupt(x0, torch.full((2,), t_now, dtype=torch.float64), torch.randn_like(x0))
        x_next = ddim_step(x_t, x0, t_now, 0.0, 0.1)
        # gamma(0) = cos(ns / (1 + ds) * pi / 2)^2 is 1 - 1e-7, not 1: x_next is x0 up to that.
        assert torch.allclose(x_next, x0, atol=1e-3)
        assert torch.equal(analog_to_mask(x_next.float(), 3, 3), analog_to_mask(x0.float(), 3, 3))


@FAST
@given(p=st.sampled_from([0.0, 0.2, 0.4, 1.0]), seed=st.integers(0, 999))
def test_size_weights_sum_to_hw_and_follow_c_to_minus_p(p, seed):
    ids = torch.from_numpy(np.random.default_rng(seed).integers(0, 4, (2, 5, 7)))
    w = size_weights(ids, p)
    assert torch.allclose(w.sum((1, 2)), torch.full((2,), 35.0))
    for b in range(2):
        counts = torch.bincount(ids[b].reshape(-1), minlength=4).float()
        ratio = w[b] / counts[ids[b]].pow(-p)  # w = k * c^-p with one k per image
        assert torch.allclose(ratio, ratio.reshape(-1)[0].expand_as(ratio), rtol=1e-5)


@FAST
@given(n=st.integers(1, 8), G=st.integers(1, 3), scale=st.sampled_from([0.1, 1.0]), seed=st.integers(0, 999))
def test_expected_bits_of_one_hot_logits_are_the_analog_bits(n, G, scale, seed):
    rng = np.random.default_rng(seed)
    target = torch.from_numpy(rng.integers(0, 2 ** n, (2, 3, 4, G)))
    logits = torch.nn.functional.one_hot(target, 2 ** n).permute(0, 3, 4, 1, 2).float() * 1e4
    m_pred = expected_bits(logits, scale)
    want = torch.cat([(int2bit(target[..., g], n).float() * 2 - 1) * scale for g in range(G)], -1)
    assert torch.allclose(m_pred, want.permute(0, 3, 1, 2), atol=1e-6)


def test_softmax_ce_is_weighted_sum_over_groups():
    torch.manual_seed(0)
    logits, target, w = torch.randn(2, 2, 8, 3, 3), torch.randint(0, 8, (2, 3, 3, 2)), torch.rand(2, 3, 3)
    logp = logits.log_softmax(2)
    want = -sum(logp[:, g].gather(1, target[None, ..., g].permute(1, 0, 2, 3)).squeeze(1) for g in range(2)) * w
    assert torch.allclose(softmax_ce(logits, target, w), want, atol=1e-6)
    assert torch.equal(softmax_ce(logits, target.int(), w), softmax_ce(logits, target, w))  # any int type


def test_majority_vote():
    cls = torch.tensor([[1, 1, 2, 3], [1, 2, 2, 0], [9, 4, 4, 4]])
    ids = torch.tensor([[1, 1, 1, 2], [1, 1, 5, 5], [3, 3, 3, 0]])
    out = majority_vote(torch.stack([cls, ids], -1)[None], n_classes=4, min_pixels=2)[0]
    # id 1: classes 1,1,2,1,2 -> 1; id 2: one pixel < 2 -> void; id 5: classes 2,0 -> tie goes to
    # the lower class, void -> void; id 3: classes 4 (9 clamped), 4, 4 -> 4; identity 0 -> void.
    assert out[..., 0].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [4, 4, 4, 0]]
    assert out[..., 1].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [3, 3, 3, 0]]


def test_match_identities_by_hand():
    """Inpainting's renaming: known 3 and 5 sit on the model's 1 and 2, so they take those names;
    known 4 sits where the model predicts void, so it takes the first name the model does not use
    (3), not one that would merge it into a predicted segment; pi is a permutation with pi[0] = 0."""
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[:, :3, :2], pred[:, :3, 2:] = 1, 2
    known = torch.full((1, 4, 4), 4)
    known[:, :3, :2], known[:, :3, 2:] = 3, 5
    first = torch.full((1, 8), 16).scatter_reduce(1, known.view(1, -1), torch.arange(16).view(1, -1), "amin")
    pi = match_identities(pred, known, torch.ones(1, 4, 4, dtype=torch.bool), first)
    assert (pi[0, 0], pi[0, 3], pi[0, 5], pi[0, 4]) == (0, 1, 2, 3)
    assert sorted(pi[0].tolist()) == list(range(8))
