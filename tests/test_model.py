"""Pix2SeqD as a whole: shapes, bad input, the kernel path against the reference path, inpainting."""
import pytest
import torch

from diffusion import Pix2SeqD, paper_config, tiny_config


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


def test_paper_preset_parameter_count():
    n = sum(p.numel() for p in Pix2SeqD(paper_config()).parameters())
    assert 60e6 < n < 100e6  # the paper reports 94.5M; see README for this implementation's count


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
