"""figures.py: the legends show exactly the colours drawn, every class has its own colour, overlays
computed in blocks equal those computed at once, and the frames of a video's GIF are enlarged."""
import numpy as np
import pytest
from matplotlib.colors import to_rgb

import figures
from diffusion import tiny_config

CATS = {c: {"name": f"class {c}", "isthing": int(c > 2)} for c in range(1, 134)}  # COCO's 133 classes


def u8(rgb):
    return tuple(int(round(255 * v)) for v in rgb)


def legend_colours(legend):
    return {u8(to_rgb(h.get_facecolor())) for h in legend.legend_handles if h.get_fill()}


def drawn_colours(image):
    """The colours of an RGB uint8 image, without the white lines between segments."""
    return {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0).tolist()} - {(255, 255, 255)}


def example_mask(h=40, w=50):
    mask = np.zeros((h, w, 2), np.int64)
    mask[:20] = (1, 1)
    mask[20:] = (2, 1)
    mask[5:15, 5:15] = (97, 1)
    mask[5:15, 25:35] = (97, 2)  # two segments of one class: one colour
    mask[25:35, 30:45] = (133, 4)
    mask[36:, :5] = (0, 0)  # void
    return mask


def test_every_class_of_coco_has_its_own_colour():
    colours = [u8(c) for c in figures.PALETTE[1:134]]
    assert len(set(colours)) == 133
    assert not {(0, 0, 0), (255, 255, 255), u8(figures.NO_CLASS)} & set(u8(c) for c in figures.PALETTE[1:])
    assert len({u8(c) for c in figures.PALETTE[1:]}) == len(figures.PALETTE) - 1  # all 255 of 8-bit classes


def test_figure_legend_is_the_colours_of_the_segments_panel(tmp_path):
    mask = example_mask()
    segments = figures.overlay(np.zeros(mask.shape[:2] + (3,), np.uint8), mask, tint=1)
    image = np.full(mask.shape[:2] + (3,), 128, np.uint8)
    fig = figures.save_figure(tmp_path / "f.png", [image, segments], ["input", "segments"], [1, 2, 97, 97, 133], CATS,
                              void=True)
    legend = fig.axes[-1].get_legend()
    assert legend_colours(legend) == drawn_colours(segments)
    labels = [t.get_text() for t in legend.get_texts()]
    assert "class 97: 2 segments" in labels and "class 1: 1 segment" in labels  # one entry per class, counted


def test_inpainting_figure_hatches_the_sampled_pixels(tmp_path):
    mask = example_mask()
    known = np.zeros(mask.shape[:2], bool)
    known[:, :25] = True
    image = figures.overlay(np.zeros(mask.shape[:2] + (3,), np.uint8), mask, tint=1)
    fig = figures.save_figure(tmp_path / "f.png", [image, image], ["a", "b"], [1, 2, 97, 97, 133], CATS, True, known)
    ax = fig.axes[-1]
    (hatched,) = [c for c in ax.collections if getattr(c, "hatches", [None])[0]]
    xs = np.concatenate([p.vertices[:, 0] for p in hatched.get_paths()])
    assert xs.min() == 24.5 and xs.max() == 49  # the hatched area: the columns not known
    assert sum(bool(h.get_hatch()) for h in ax.get_legend().legend_handles) == 1


def test_run_summary_legend_is_the_colours_of_its_masks(tmp_path):
    gt, pred = example_mask(32, 32), example_mask(32, 32)
    pred[:3] = (7, 1)
    gt[-4:, :5] = (0, 0)  # void
    image = np.full((3, 64, 64), 0.5, np.float32)  # void must be drawn black, not as the input
    fig = figures.save_run_figure(tmp_path / "s.png", [{"step": s, "loss": 1 / (1 + s)} for s in range(30)],
                                  [(image, gt, pred)], "run", CATS)
    shown = np.concatenate([np.asarray(a.get_images()[0].get_array()).reshape(-1, 3) for a in fig.axes[2:4]])
    assert legend_colours(fig.legends[0]) == drawn_colours((shown * (255 if shown.max() <= 1 else 1)).astype(np.uint8))
    assert len(fig.axes[0].lines[0].get_xdata()) == 30


def test_noise_figure_legend_names_void_and_bits_of_no_class():
    cfg = tiny_config(n_classes=5)
    mask = example_mask(32, 32)
    mask[mask[..., 0] > 5] = (3, 2)
    rows, decoded = figures.noise_panels(mask, cfg, seed=0)
    handles = figures.mask_legend(decoded, CATS, cfg.n_classes)
    drawn = set().union(*(drawn_colours((im * 255).round().astype(np.uint8)) for row in rows for im, _ in row))
    assert {u8(to_rgb(h.get_facecolor())) for h in handles} == drawn
    assert u8(figures.NO_CLASS) in drawn and (0, 0, 0) in drawn  # high t: patterns of no class, and void


def test_overlay_in_blocks_equals_overlay_at_once():
    mask = example_mask()
    image = np.random.default_rng(0).random(mask.shape[:2] + (3,)).astype(np.float32)
    whole = figures.overlay(image, mask, rows=10 ** 6)
    assert np.array_equal(figures.overlay(image, mask, rows=3), whole)
    as_bytes = (image * 255).round().astype(np.uint8)
    assert np.array_equal(figures.overlay(as_bytes, mask), figures.overlay(as_bytes.astype(np.float32) / 255, mask))
    assert (whole[15, 5:15] == 255).all() and (whole[5:15, 5] == 255).all()  # a segment's edges


@pytest.mark.parametrize("h, w", [(64, 64), (40, 100), (600, 300)])
def test_video_frames_are_enlarged_with_a_legend_of_their_colours(h, w):
    mask = np.zeros((h, w, 2), np.int64)
    mask[: h // 2] = (1, 1)
    mask[h // 2:] = (3, 2)
    mask[-2:] = (0, 0)  # void
    image = np.full((h, w, 3), 100, np.uint8)
    frames = figures.video_frames([image] * 2, [mask] * 2, CATS)
    r = max(1, -(-256 // min(h, w)))
    im = np.asarray(frames[0])
    assert im.shape[1] == 2 * w * r and min(im.shape[:2]) >= 256
    segments = figures.overlay(np.zeros_like(image), mask, tint=1, shade=True)
    assert np.array_equal(im[:h * r, w * r:], segments.repeat(r, 0).repeat(r, 1))
    assert np.array_equal(im[:h * r, :w * r], figures.overlay(image, mask).repeat(r, 0).repeat(r, 1))
    strip = {tuple(c) for c in im[h * r:].reshape(-1, 3).tolist()}
    assert drawn_colours(figures.overlay(np.zeros_like(image), mask, tint=1)) <= strip  # each class's base colour
    assert u8(figures.PALETTE[2]) not in strip


def test_identity_shades_follow_the_identity_not_the_frame():
    """Video figures: a thing keeping its identity keeps its shade; two things of a class differ."""
    a = np.array([[[1, 1], [1, 2], [3, 1]]])
    b = np.array([[[1, 2], [1, 1], [0, 0]]])  # the identities swap places
    ca, cb = figures.colours(a, shade=True), figures.colours(b, shade=True)
    assert np.array_equal(ca[0, 0], cb[0, 1]) and np.array_equal(ca[0, 1], cb[0, 0])
    assert not np.array_equal(ca[0, 0], ca[0, 1])
    plain = figures.colours(a)
    assert np.allclose(ca / np.maximum(plain, 1e-9), ca[..., :1] / np.maximum(plain[..., :1], 1e-9), atol=1e-6)
