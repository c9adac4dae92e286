"""Pix2SeqD as a whole: shapes, bad input, the kernel path against the reference path, inpainting."""
import math

import pytest
import torch

from diffusion import Pix2SeqD, corrupt, paper_config, tiny_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Pix2SeqD(tiny_config(mask_size=16, image_size=32)).eval()


def batch(B=2, S=32, M=16):
    torch.manual_seed(1)
    return torch.rand(B, 3, S, S), torch.stack([torch.randint(0, 6, (B, M, M)), torch.randint(0, 8, (B, M, M))], -1)


def test_shapes_and_trajectory(model):
    images, masks = batch()
    loss, stats = model.train_loss(images, masks)
    assert loss.dim() == 0 and stats["loss"] == loss.item()
    out, path = model.infer(images, steps=3, td=1.0, trajectory=True)
    assert out.shape == (2, 16, 16, 2) and out.dtype == torch.long and len(path) == 3
    assert torch.equal(path[-1], out)
    assert int(out[..., 0].max()) <= 5


@pytest.mark.parametrize("masks, match", [
    (torch.zeros(2, 16, 16, dtype=torch.long), r"\[B, H, W, 2\]"),
    (torch.zeros(2, 16, 16, 2), "integer"),
    (torch.full((2, 16, 16, 2), 8), "bits hold only"),
    (torch.zeros(2, 8, 8, 2, dtype=torch.long), "do not match"),
    (torch.zeros(3, 16, 16, 2, dtype=torch.long), "do not match"),
])
def test_bad_masks_raise(model, masks, match):
    images, _ = batch()
    with pytest.raises(ValueError, match=match):
        model.train_loss(images, masks)


def test_bad_images_raise(model):
    with pytest.raises(ValueError, match="images must be"):
        model.infer(torch.rand(2, 32, 32))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_images_of_another_float_dtype_are_cast_to_the_weights(model, dtype):
    images, masks = batch()
    torch.manual_seed(2)
    want = model.infer(images.to(dtype).float(), steps=2), model.train_loss(images.to(dtype).float(), masks)[0]
    torch.manual_seed(2)
    got = model.infer(images.to(dtype), steps=2), model.train_loss(images.to(dtype), masks)[0]
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_train_loss_traces_to_one_graph(model):
    """train.py --compile: no host syncs inside Alg. 1 (the id range checks step aside inside
    torch.compile, size weights count by sorting), so it compiles to one graph, not 21."""
    images, masks = batch()
    explained = torch._dynamo.explain(model.train_loss)(images, masks)
    assert explained.graph_count == 1 and explained.graph_break_count == 0


@pytest.mark.triton
def test_kernel_path_equals_reference_path(model, monkeypatch):
    """The Triton kernels (interpreted on the CPU) and the PyTorch references give the same loss,
    the same gradients and the same samples."""
    images, masks = batch()
    results = []
    for mode in ("0", "1"):
        monkeypatch.setenv("PIX2SEQD_KERNELS", mode)
        model.zero_grad()
        torch.manual_seed(2)
        loss, _ = model.train_loss(images, masks)
        loss.backward()
        grad = model.decoder.conv_out.weight.grad.clone()
        torch.manual_seed(3)
        results.append((loss.item(), grad, model.infer(images, steps=2)))
    (l0, g0, m0), (l1, g1, m1) = results
    assert l1 == pytest.approx(l0, rel=1e-5)
    assert torch.allclose(g0, g1, rtol=1e-4, atol=1e-6)
    assert (m0 == m1).float().mean() > 0.99  # a bit exactly at 0 may round either way


def test_inpainting_keeps_known_pixels(model):
    images, masks = batch()
    masks[..., 0] = masks[..., 0].clamp(max=5)
    region = torch.rand(2, 16, 16) < 0.5
    out = model.infer(images, steps=3, known=masks, known_region=region)
    assert torch.equal(out[region], masks[region])


def test_inpainting_needs_known_and_region_of_the_mask_size(model):
    images, masks = batch()
    with pytest.raises(ValueError, match="both known"):
        model.infer(images, steps=2, known=masks)
    with pytest.raises(ValueError, match="known_region bool"):
        model.infer(images, steps=2, known=masks, known_region=torch.ones(2, 16, 16))  # float
    with pytest.raises(ValueError, match="known must be"):
        model.infer(images, steps=2, known=masks[:, :8], known_region=torch.ones(2, 8, 16, dtype=torch.bool))


def test_empty_batch_samples_nothing_and_has_no_loss(model):
    images = torch.rand(0, 3, 32, 32)
    none = torch.zeros(0, 16, 16, 2, dtype=torch.long)
    assert model.infer(images, steps=2).shape == (0, 16, 16, 2)
    region = torch.zeros(0, 16, 16, dtype=torch.bool)
    assert model.infer(images, steps=2, known=none, known_region=region).shape == (0, 16, 16, 2)
    with pytest.raises(ValueError, match="empty batch"):
        model.train_loss(images, none)


def test_group_norm_fits_any_width():
    from encoder import norm
    for c in list(range(1, 70)) + [144, 200, 384]:
        g = norm(c).num_groups
        assert c % g == 0 and g <= 32 and (g == 1 or c // g >= 4)
    assert [norm(c).num_groups for c in (8, 16, 32, 64, 128, 256, 512)] == [2, 4, 8, 16, 32, 32, 32]


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def test_paper_preset_is_the_official_model_component_by_component():
    """The counts of the authors' TensorFlow build of configs/config_diffusion_panoptic_image.py
    (train_high_res): the same layers, not a padded total (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = Pix2SeqD(paper_config())
    e, d = model.encoder, model.decoder
    counts = {
        "resnet": n_params(e.resnet), "projection + layernorm": n_params(e.proj, e.proj_ln),
        "output layernorm": n_params(e.ln), "12 encoder layers": n_params(e.layers),
        "merge blocks": (n_params(e.up_out), n_params(e.up4), n_params(e.up8)),
        "time mlp": n_params(d.t_mlp), "conv_in + gn": n_params(d.conv_in, d.norm_in),
        "down res blocks": n_params(d.down), "down resampling": n_params(d.down_convs),
        "bottleneck in": n_params(d.norm_mid_in, d.conv_mid_in), "time token": n_params(d.t_token),
        "6 blocks": n_params(d.blocks), "bottleneck out": n_params(d.norm_mid_out, d.conv_mid_out),
        "up res blocks": n_params(d.up), "up resampling": n_params(d.up_convs),
        "output head": n_params(d.norm_out, d.conv_out),
        "encoder": n_params(e.resnet, e.proj, e.proj_ln, e.layers, e.ln),
        "merge": n_params(e.up8, e.up4, e.up_out), "decoder": n_params(d), "total": n_params(model)}
    assert counts == {
        "resnet": 8_543_296, "projection + layernorm": 525_824, "output layernorm": 1_024,
        "12 encoder layers": 37_828_608, "merge blocks": (656_896, 722_432, 2_624_512),
        "time mlp": 328_704, "conv_in + gn": 35_200, "down res blocks": 3_479_552, "down resampling": 885_248,
        "bottleneck in": 132_096, "time token": 262_656, "6 blocks": 25_224_192, "bottleneck out": 263_680,
        "up res blocks": 11_584_512, "up resampling": 1_327_744, "output head": 66_304,
        "encoder": 46_898_752, "merge": 4_003_840, "decoder": 43_589_888, "total": 94_492_480}
    assert isinstance(e.resnet.stem[1], torch.nn.BatchNorm2d) and e.layers[0].drop_path == 0.1


@pytest.mark.parametrize("h, w", [(2, 3), (4, 4), (7, 5), (16, 64)])
def test_positions_are_normalised_to_the_grid(h, w):
    """Official sin-cos codes: coordinates scaled to [0, 2 pi], so the first and last row (column)
    get the same codes at any grid size; the row's codes come first. The decoder uses the same."""
    import decoder
    import encoder
    dim = 16
    pos = encoder.sincos_2d(h, w, dim).view(h, w, dim)
    f = 1 / 10000 ** (torch.arange(dim // 4) * 4 / dim)
    ends = {0: torch.cat([torch.zeros(dim // 4), torch.ones(dim // 4)]),
            -1: torch.cat([(2 * math.pi * f).sin(), (2 * math.pi * f).cos()])}
    for i, code in ends.items():
        assert torch.allclose(pos[i, :, :dim // 2], code.expand(w, -1), atol=1e-5)  # row i
        assert torch.allclose(pos[:, i, dim // 2:], code.expand(h, -1), atol=1e-5)  # column i
    assert decoder.sincos_2d is encoder.sincos_2d


def test_residual_blocks_start_as_their_scaled_shortcut():
    """(x + shortcut) / sqrt(2) with the second conv near zero: a new block passes x / sqrt(2)."""
    from decoder import ResBlock
    block = ResBlock(8, 8, 16)
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(block(x, torch.randn(2, 16)), x / math.sqrt(2), atol=1e-3)


def test_encoder_dropout_only_in_training():
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config(mask_size=16, image_size=32, enc_drop_path=0.5, enc_drop_units=0.5))
    images = torch.rand(2, 3, 32, 32)
    a, b = model.encode(images)[1], model.encode(images)[1]
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model.encode(images)[1], model.encode(images)[1])


def test_checkpoint_of_an_older_architecture_is_one_line(tmp_path):
    """A checkpoint saved before Config.arch existed (architecture 1) names the problem in one line
    instead of a shape-mismatch traceback."""
    from checkpoint import load_model
    old = {k: v for k, v in tiny_config().to_dict().items()
           if k not in ("arch", "resnet_norm", "enc_drop_path", "enc_drop_units", "zero_init_out",
                        "rescale_noisy_input")}
    torch.save({"config": old, "ema": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="architecture 1") as e:
        load_model(str(tmp_path / "old.pt"))
    assert "\n" not in str(e.value) and "retrain" in str(e.value)


def test_video_model_without_past_uses_zeros_and_rejects_wrong_past():
    torch.manual_seed(0)
    video_model = Pix2SeqD(tiny_config(mask_size=16, image_size=32, n_past=2)).eval()
    images, _ = batch()
    torch.manual_seed(4)
    a = video_model.infer(images, steps=2)
    torch.manual_seed(4)
    b = video_model.infer(images, steps=2, past=torch.zeros(2, 12, 16, 16))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="past must have 12 channels"):
        video_model.infer(images, steps=1, past=torch.zeros(2, 6, 16, 16))


def test_self_conditioning_reads_the_previous_estimate_only_where_the_coin_says():
    torch.manual_seed(0)
    sc = Pix2SeqD(tiny_config(mask_size=16, image_size=32, self_cond=True))
    images, masks = batch()
    t, eps = torch.tensor([0.3, 0.7]), torch.randn(2, 6, 16, 16)
    h = sc.encode(images)
    m_crpt = corrupt(sc.to_bits(masks), t, eps)
    # u >= 0.5: no first pass, the estimate is zeros (what the first sampling step reads)
    assert torch.equal(sc.self_cond_estimate(m_crpt, h, t, u=torch.tensor([0.5, 0.9])), torch.zeros_like(m_crpt))
    est = sc.self_cond_estimate(m_crpt, h, t, u=torch.tensor([0.1, 0.9]))
    assert not est.requires_grad and torch.equal(est[1], torch.zeros_like(est[1]))
    torch.testing.assert_close(est[:1], sc.decode(m_crpt[:1], tuple(x[:1] for x in h), t[:1])[1])
    assert est[0].abs().max() <= sc.cfg.scale + 1e-6 and est[0].abs().max() > 0
    # the trained pass reads it: the loss of an example depends on its coin
    loss_on, _ = sc.train_loss(images, masks, t=t, eps=eps, u=torch.zeros(2))
    loss_off, _ = sc.train_loss(images, masks, t=t, eps=eps, u=torch.ones(2))
    assert loss_on.item() != loss_off.item()
    loss_on.backward()  # the gradient flows through the trained pass only
    assert all(p.grad is not None for p in sc.decoder.parameters())


def test_self_conditioned_sampling_feeds_each_step_the_last_estimate(monkeypatch):
    torch.manual_seed(0)
    sc = Pix2SeqD(tiny_config(mask_size=16, image_size=32, self_cond=True)).eval()
    images, _ = batch()
    seen, decode = [], sc.decode

    def spy(m_t, h, t, past=None, m_prev=None):
        seen.append(m_prev)
        out = decode(m_t, h, t, past, m_prev)
        seen.append(out[1])
        return out
    monkeypatch.setattr(sc, "decode", spy)
    sc.infer(images, steps=3)
    assert seen[0] is None  # the first step: no estimate yet (zeros)
    assert seen[2] is seen[1] and seen[4] is seen[3]  # each later step reads the one before


def test_self_conditioning_off_in_the_paper_preset_and_on_a_knob():
    assert not paper_config().self_cond
    off = Pix2SeqD(tiny_config(self_cond=False)).decoder.conv_in.in_channels
    on = Pix2SeqD(tiny_config(self_cond=True)).decoder.conv_in.in_channels
    assert on - off == tiny_config().n_bits


def test_pool_resampling_is_average_pooling_down_and_nearest_upsampling_up():
    """dec_resample='pool': no resampling convs; each level below the first reads the 2x2 average
    of the level above, and the up path's next level reads the nearest upsampling of the last."""
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config(mask_size=16, image_size=32, dec_resample="pool")).eval()
    d = model.decoder
    assert len(d.down_convs) == 0 and len(d.up_convs) == 0
    seen = {}
    d.down[0].register_forward_hook(lambda m, i, o: seen.__setitem__("down0", o))
    d.down[1].register_forward_pre_hook(lambda m, i: seen.__setitem__("down1_in", i[0]))
    d.up[0][1].register_forward_hook(lambda m, i, o: seen.__setitem__("up0", o))
    d.up[1][0].register_forward_pre_hook(lambda m, i: seen.__setitem__("up1_in", i[0]))
    images, masks = batch()
    with torch.no_grad():
        model.train_loss(images, masks)
    assert torch.equal(seen["down1_in"], torch.nn.functional.avg_pool2d(seen["down0"], 2))
    up = seen["up0"].repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.equal(seen["up1_in"][:, :up.shape[1]], up)
    assert paper_config().dec_resample == "conv"
    with pytest.raises(ValueError, match="dec_resample"):
        Pix2SeqD(tiny_config(dec_resample="bilinear"))
