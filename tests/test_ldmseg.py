"""LDMSeg (ldmseg.py): the scaled-linear schedule, epsilon prediction and min-SNR weighting
against their formulas (and diffusers' own scheduler); the mask's bits and id names; the paper
preset built from Stable Diffusion's classes (small random configs, loaded as from_pretrained
loads); sampling and Alg. 3's inpainting; the autoencoder on real COCO masks; bad input."""
import os
import sys

import numpy as np
import pytest
import torch

from hypothesis import given, settings, strategies as st

import checkpoint
import ldmseg
import stable_diffusion
from bits import bit2int
from coco import CocoPanoptic
from data import ShapesDataset
from evaluate import AGNOSTIC
from identities import class_agnostic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "..", "shared", "data", "coco-panoptic-sample")
needs_sample = pytest.mark.skipif(not os.path.isdir(SAMPLE), reason="needs the real COCO sample: two val2017 images "
                                  "with their panoptic ground truth from panopticapi's sample_data, laid out as COCO "
                                  "(docs/coco.md, Data) in ../shared/data/coco-panoptic-sample")
SHIPPED = os.path.join(checkpoint.SHIPPED, "shapes-ldmseg-tiny.pt")


def small_paper_config(**kw):
    """The paper preset's structure (SD's VAE encoder for z_i, a UNet with transformer blocks at
    three levels) at widths a CPU builds in a second."""
    return ldmseg.paper_config(**{**dict(image_size=64, mask_size=64, vae_widths=(32, 32, 32, 32), vae_layers=1,
                                         unet_widths=(32, 32, 64, 64), unet_layers=1, unet_groups=16), **kw})


def test_scaled_linear_schedule_is_stable_diffusions():
    a = ldmseg.alphas_cumprod(1000, 0.00085, 0.012)
    betas = torch.tensor([(0.00085 ** 0.5 + (0.012 ** 0.5 - 0.00085 ** 0.5) * k / 999) ** 2 for k in range(1000)],
                         dtype=torch.float64)
    assert torch.allclose(a, torch.cumprod(1 - betas, 0), rtol=1e-12, atol=0)
    assert torch.allclose(a[[0, -1]], torch.tensor([1 - 0.00085, a[-1].item()], dtype=torch.float64))
    from diffusers import DDPMScheduler
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert torch.allclose(a.float(), theirs.alphas_cumprod, rtol=1e-5, atol=0)


@given(st.floats(1e-4, 1 - 1e-4), st.floats(0.5, 5.0))
def test_min_snr_weight_is_its_formula(alpha_bar, gamma):
    snr = alpha_bar / (1 - alpha_bar)
    w = ldmseg.snr_weight(torch.tensor(alpha_bar, dtype=torch.float64), gamma).item()
    assert w == pytest.approx(min(snr, gamma) / snr, rel=1e-12)
    assert (w == pytest.approx(1.0)) == (snr <= gamma) or snr == pytest.approx(gamma)


def test_min_snr_down_weights_the_first_quarter_of_t():
    """The paper's words for gamma = 2 on this schedule: the small t (about the first 25% of T) weigh less."""
    w = ldmseg.snr_weight(ldmseg.alphas_cumprod())
    first = int((w < 1).nonzero().max()) + 1
    assert 0.15 * 1000 < first < 0.35 * 1000 and w[0] < 0.01 and (w[first:] == 1).all()


def test_ddim_times_are_the_releases():
    assert ldmseg.ddim_timesteps(50) == list(range(999, 0, -20))
    assert ldmseg.ddim_timesteps(1) == [999]
    assert ldmseg.ddim_timesteps(7)[0] == 999 and ldmseg.ddim_timesteps(7)[-1] == 0


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ldmseg.LDMSeg(ldmseg.tiny_config()).eval()


def shapes(n, split="train"):
    images, masks = zip(*(ShapesDataset(split, mask_size=32, permute=False)[i] for i in range(n)))
    return torch.stack(images), torch.stack(masks)


def test_train_loss_is_weighted_eps_mse(tiny):
    """z_t = sqrt(a) z_0 + sqrt(1 - a) eps, and the loss is mean(w_t (eps_pred - eps)^2) over the
    non-void latent cells: a UNet off by c everywhere costs c^2 mean(w_t valid)."""
    images, masks = shapes(4)
    masks[0, :8, :8] = 0  # void: 4 x 4 latent cells of image 0 (f_t halves the side)
    t = torch.tensor([0, 10, 500, 999])
    eps = torch.randn(4, 4, 16, 16)
    seen = {}

    def eps_pred(z_t, z_i, tt, s):
        seen["z_t"] = z_t
        return eps + 0.5

    tiny.unet_out, c = eps_pred, 0.5
    try:
        torch.manual_seed(1)
        loss = tiny.train_loss(images, masks, t=t, eps=eps)[0]
    finally:
        del tiny.unet_out
    torch.manual_seed(1)
    z_0 = tiny.encode_mask(ldmseg.remap_ids(ldmseg.segment_ids(masks)))
    a = tiny.alpha_bar[t].float().view(4, 1, 1, 1)
    assert torch.allclose(seen["z_t"], a.sqrt() * z_0 + (1 - a).sqrt() * eps, atol=1e-6)
    valid = torch.ones(4, 1, 16, 16)
    valid[0, :, :4, :4] = 0
    w = ldmseg.snr_weight(tiny.alpha_bar[t]).float().view(4, 1, 1, 1)
    assert loss.item() == pytest.approx((c ** 2 * w * valid).expand(4, 4, 16, 16).mean().item(), rel=1e-5)
    assert torch.allclose(tiny.x0_from_eps(seen["z_t"], eps, a), z_0, atol=1e-4)


@given(st.integers(0, 2 ** 31 - 1))
@settings(max_examples=20, deadline=None)
def test_ids_become_seven_bits_and_random_names(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 9, (3, 5, 6), generator=g)
    named = ldmseg.remap_ids(ids, g)
    for a, b in zip(ids, named):  # one distinct name in 1..127 per segment, void kept
        pairs = set(zip(a.flatten().tolist(), b.flatten().tolist()))
        assert all((x == 0) == (y == 0) and 0 <= y <= 127 for x, y in pairs)
        assert len({x for x, _ in pairs}) == len(pairs) == len({y for _, y in pairs})
    bits = ldmseg.id_bits(named)
    assert set(bits.unique().tolist()) <= {-1.0, 0.0, 1.0} and bits.shape == (3, 7, 5, 6)
    assert ((bits == 0).all(1) == (named == 0)).all()
    assert torch.equal(torch.where(named > 0, bit2int(bits.permute(0, 2, 3, 1)), 0), named)


def test_more_than_127_segments_is_one_line():
    ids = torch.arange(200).view(1, 10, 20)
    with pytest.raises(ValueError, match="at most 127 segments") as e:
        ldmseg.remap_ids(ids)
    assert "\n" not in str(e.value)


def test_sampling_and_inpainting(tiny):
    """Samples are (1, id) masks; with the whole mask known, Alg. 3 returns it; the trajectory has one
    mask per step; the same seed gives the same sample."""
    images, masks = shapes(2, "val")
    torch.manual_seed(0)
    a = tiny.infer(images, steps=3)
    torch.manual_seed(0)
    b, path = tiny.infer(images, steps=3, trajectory=True)
    assert a.shape == (2, 32, 32, 2) and torch.equal(a, b) and len(path) == 3
    assert ((a[..., 0] == 1) == (a[..., 1] > 0)).all()
    known = torch.ones(2, 32, 32, dtype=torch.bool)
    out = tiny.infer(images, steps=2, known=masks, known_region=known)
    assert torch.equal(class_agnostic(out)[..., 0], class_agnostic(masks)[..., 0])
    assert torch.equal(out[..., 1], ldmseg.segment_ids(masks))


def test_paper_preset_starts_from_stable_diffusion(tmp_path):
    """load_stable_diffusion reads SD's folders as from_pretrained does (here: small random models
    saved in that layout): the VAE encoder as saved, the UNet's cross-attention gone, conv_in's extra
    channels zero, so that at the start the UNet ignores z_i and s and computes SD's UNet on z_t."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    cfg = small_paper_config()
    torch.manual_seed(0)
    vae, unet = AutoencoderKL(**stable_diffusion.vae_config(cfg)), UNet2DConditionModel(**stable_diffusion.unet_config(cfg))
    vae.save_pretrained(tmp_path / "vae")
    unet.save_pretrained(tmp_path / "unet")
    model = ldmseg.LDMSeg(cfg).eval()
    assert "loaded" in stable_diffusion.load_stable_diffusion(model, str(tmp_path))
    assert not any(".attn2." in k for k in model.state_dict())
    w = model.unet.conv_in.weight
    assert w.shape[1] == 12 and torch.equal(w[:, :4], unet.conv_in.weight) and (w[:, 4:] == 0).all()
    images = torch.rand(2, 3, 64, 64)
    z_i = model.image_latents(images)
    with torch.no_grad():
        mean = vae.encode(images * 2 - 1).latent_dist.mean * 0.18215
        assert torch.allclose(z_i, mean, atol=1e-5)
        z_t, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 700])
        ours = model.unet_out(z_t, z_i, t, torch.randn(2, 4, 8, 8))
        theirs = stable_diffusion.strip_cross_attention(unet)(z_t, t, encoder_hidden_states=None).sample
    assert torch.allclose(ours, theirs, atol=1e-5)
    other = ldmseg.LDMSeg(small_paper_config(unet_widths=(32, 32, 64, 128)))
    with pytest.raises(ValueError, match="not the paper preset's") as e:
        stable_diffusion.load_stable_diffusion(other, str(tmp_path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("image_latents, channels", [("pixels", 48), ("pool", 3), ("vae", 4)])
def test_image_latents_of_the_tiny_preset(image_latents, channels):
    """z_i on the mask latents' 16x16 grid; the small image VAE trains in stage 1 beside the mask
    autoencoder (its reconstruction in the loss, gradients in its encoder and decoder)."""
    model = ldmseg.LDMSeg(ldmseg.tiny_config(image_latents=image_latents, vae_widths=(32, 32, 32), vae_layers=1))
    images, masks = shapes(2)
    assert model.image_latents(images).shape == (2, channels, 16, 16)
    loss, stats = model.ae_loss(masks, images)
    loss.backward()
    assert ("image" in stats) == (image_latents == "vae")
    if image_latents == "vae":
        assert all(p.grad is not None for p in [*model.f_i.parameters(), *model.g_i.parameters()])


def test_missing_diffusers_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match="pip install diffusers") as e:
        ldmseg.LDMSeg(ldmseg.tiny_config())
    assert "\n" not in str(e.value)


@needs_sample
def test_autoencoder_round_trip_on_real_coco_masks():
    """The two real COCO masks (64 px, up to 30 segments each): their 7 bits give back every
    segment's (remapped) id exactly, void as void; and the autoencoder learns them, its loss down by
    a fifth in 300 steps with names drawn afresh each step (a full round trip to high PQ takes the
    release's tens of thousands of steps)."""
    ds = CocoPanoptic(SAMPLE, "val", 128, 64, permute=False, max_identities=127)
    masks = torch.stack([ds[i][1] for i in range(2)])
    ids = ldmseg.remap_ids(ldmseg.segment_ids(masks), torch.Generator().manual_seed(0))
    assert len(ids.unique()) > 20
    bits = ldmseg.id_bits(ids)
    assert torch.equal(torch.where(ids > 0, bit2int(bits.permute(0, 2, 3, 1)), 0), ids)
    assert ((bits == 0).all(1) == (ids == 0)).all()
    torch.manual_seed(0)
    model = ldmseg.LDMSeg(ldmseg.tiny_config(image_size=128, mask_size=64))
    opt = torch.optim.AdamW([*model.f_t.parameters(), *model.g.parameters()], lr=3e-3, weight_decay=0.05)
    losses = []
    for step in range(300):
        loss = model.ae_loss(masks)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20])


def test_each_model_refuses_the_others_checkpoint(tmp_path):
    """sample.py reads both; a reader of one kind names the model the file holds, in one line."""
    cfg = ldmseg.tiny_config()
    path = str(tmp_path / "l.pt")
    checkpoint.save(path, {"config": cfg.to_dict(), "ema": ldmseg.LDMSeg(cfg).state_dict(),
                           "categories": {"1": AGNOSTIC[1]}})
    model, _ = checkpoint.load_model(path)
    assert isinstance(model, ldmseg.LDMSeg)
    with pytest.raises(ValueError, match="holds an LDMSeg model, not a Pix2Seq-D model") as e:
        checkpoint.load_model(path, kind="pix2seq-d")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="holds a Pix2Seq-D model, not an LDMSeg model"):
        checkpoint.load_model(checkpoint.SHIPPED_IMAGE, kind="ldmseg")


@pytest.mark.skipif(not os.path.isfile(SHIPPED), reason="the shipped checkpoints/shapes-ldmseg-tiny.pt is absent")
def test_shipped_checkpoint_segments_the_shapes():
    """The end-to-end check that LDMSeg learned: the shipped tiny model, 50 DDIM steps, class-agnostic
    PQ over 25 on 50 held-out shapes (50 DDPM steps, as train.py --model ldmseg evaluates; 0 untrained)."""
    from evaluate import pq_on_dataset
    model, ckpt = checkpoint.load_model(SHIPPED, kind="ldmseg")
    torch.manual_seed(0)
    res = pq_on_dataset(model, ShapesDataset("val", size=50, mask_size=32, permute=False), AGNOSTIC, 50,
                        progress=False, eta=1.0)
    assert res["All"]["pq"] > 0.25


def test_train_and_sample_an_ldmseg_run(tmp_path, capsys):
    """train.py --model ldmseg runs both stages and prints its eval line; --resume after --stop-at in
    stage 1 continues into stage 2; sample.py segments an image with its checkpoint and scores it
    with --evaluate (class-agnostic)."""
    import sample
    import train
    flags = ["--model", "ldmseg", "--ae-steps", "3", "--train-steps", "3", "--batch-size", "4", "--eval-images", "2",
             "--steps", "2", "--warmup", "1", "--out", str(tmp_path), "--name", "l"]
    assert train.main(flags + ["--stop-at", "2"]) is None
    assert checkpoint.read(str(tmp_path / "l" / "ckpt.pt"))["step"] == 2
    result = train.main(flags + ["--resume"])
    out = capsys.readouterr().out
    assert "stage 1: the autoencoder alone" in out and out.strip().splitlines()[-1].startswith("eval: class-agnostic PQ=")
    assert 0 <= result["pq"] <= 1 and 0 <= result["ae_pq"] <= 1
    ckpt = str(tmp_path / "l" / "ckpt.pt")
    assert checkpoint.read(ckpt)["step"] == 6
    image = os.path.join(checkpoint.EXAMPLES, "shapes_val_0.png")
    sample.main([image, "--ckpt", ckpt, "--out", str(tmp_path / "s"), "--steps", "2", "--trajectory"])
    for suffix in ("_panoptic.png", "_figure.png", "_trajectory.png"):
        assert (tmp_path / "s" / f"shapes_val_0{suffix}").is_file()
    rows = sample.main(["--evaluate", "--ckpt", ckpt, "--n", "2", "--sweep-steps", "1,2", "--steps", "2",
                        "--inpaint-drop", "0.5", "--out", str(tmp_path / "e")])
    assert [(r["steps"], r["drop"]) for r in rows] == [(1, 0.0), (2, 0.0), (2, 0.5)]
    assert all(r["pq_stuff"] == 0 for r in rows)


@pytest.mark.parametrize("flags, message", [
    (["--model", "ldmseg", "--unconditional"], "--unconditional is Pix2Seq-D's"),
    (["--model", "ldmseg", "--dataset", "shapes-video"], "segments images"),
    (["--ae-steps", "10"], "--ae-steps is LDMSeg's: give --model ldmseg"),
])
def test_bad_ldmseg_flags_are_one_line(flags, message, capsys):
    import train
    with pytest.raises(SystemExit):
        train.main(flags)
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_compare_scores_both_models_side_by_side(tmp_path, capsys):
    """compare.py on the shipped checkpoints (tiny settings): one row per model with class-agnostic PQ,
    Pix2Seq-D's PQ with classes, LDMSeg's autoencoder alone, the steps sweep and inpainting; a
    checkpoint of the other model where one is expected is one line."""
    import compare
    if not os.path.isfile(SHIPPED):
        pytest.skip("the shipped checkpoints/shapes-ldmseg-tiny.pt is absent")
    flags = ["--n", "2", "--sweep-steps", "1", "--steps", "2", "--inpaint-drop", "0.5", "--out", str(tmp_path)]
    rows = compare.main(flags)
    assert [r["model"] for r in rows] == ["Pix2Seq-D", "LDMSeg"]
    assert "pq_classes" in rows[0] and "ae_pq" in rows[1] and all(set(r["inpaint"]) == {0.5} for r in rows)
    assert all(set(r["pq_by_steps"]) == {1, 2} for r in rows) and (tmp_path / "compare.json").is_file()
    assert capsys.readouterr().out.count("\n| Pix2Seq-D |") == 1
    with pytest.raises(SystemExit):
        compare.main(["--pix2seq", SHIPPED] + flags)
    err = capsys.readouterr().err.strip()
    assert "holds an LDMSeg model, not a Pix2Seq-D model" in err and len(err.splitlines()) == 1
