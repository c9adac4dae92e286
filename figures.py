"""Pictures a person can look at: segment colours and overlays (sample.py, video.py), an input |
overlay | segments figure with a legend of the classes, grids of panels for the mask across
sampling steps (Fig. 11) and for masks noised to several t at two scales b, titled with their SNR
(Fig. 3), and a training run's summary (loss curve beside held-out samples).

Colours: a tab10 hue per class, a shade per identity, void black.
"""
import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from matplotlib.patches import Patch

from bits import analog_to_mask, mask_to_analog
from diffusion import corrupt
from schedule import snr

NOISE_TIMES = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 0.9)  # Fig. 3's columns
TAB10 = np.array(matplotlib.colormaps["tab10"].colors, np.float32)


def aspect(h, w):
    """h / w kept within [1/4, 4] for a figure's size (imshow keeps the true aspect inside it), so
    that a 3 x 2000 image does not ask for a figure thousands of inches tall."""
    return min(4.0, max(0.25, h / w))


def colours(mask):
    """mask: int[..., 2] -> float[..., 3] in [0, 1]: a tab10 hue per class, a shade per identity, void black."""
    cls, ident = mask[..., 0], mask[..., 1]
    rgb = TAB10[(cls - 1) % 10] * (0.5 + 0.5 * ((ident * 0.618034) % 1.0)).astype(np.float32)[..., None]
    rgb[(cls == 0) | (ident == 0)] = 0
    return rgb


def overlay(image, mask, tint=0.55):
    """image: float[H, W, 3]; mask: int[H, W, 2] -> uint8[H, W, 3]: segments tinted by their colour
    (tint = 1: the colours alone), their edges white."""
    out = np.where(((mask[..., 0] > 0) & (mask[..., 1] > 0))[..., None],
                   (1 - tint) * image + tint * colours(mask), image)
    key = mask[..., 0] * 65536 + mask[..., 1]
    edge = np.zeros(key.shape, bool)
    edge[1:] |= key[1:] != key[:-1]
    edge[:, 1:] |= key[:, 1:] != key[:, :-1]
    out[edge] = 1.0
    return (out * 255).round().astype(np.uint8)


def save_figure(path, images, titles, classes, categories):
    """Images side by side (input, overlay, the mask's own colours) with a legend of the classes
    present (the class of each segment: `classes`) beside the last, each at most ~800 pixels wide."""
    step = max(1, max(images[0].shape[:2]) // 800)
    fig = Figure(figsize=(4.5 * len(images), 3.5 * aspect(*images[0].shape[:2]) + 0.5), layout="constrained")
    axes = fig.subplots(1, len(images))
    for ax, im, title in zip(axes, images, titles):
        ax.imshow(im[::step, ::step], interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    handles = [Patch(color=TAB10[(c - 1) % 10], label=f"{categories[c]['name']} ({classes.count(c)})")
               for c in sorted(set(classes))]
    axes[-1].legend(handles=handles or [Patch(color="k", label="(all void)")], loc="center left",
                   bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def save_panels(path, rows, title):
    """A grid figure of rows of (image, caption) panels."""
    h, w = rows[0][0][0].shape[:2]
    fig = Figure(figsize=(1.7 * len(rows[0]), (1.7 * aspect(h, w) + 0.4) * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), len(rows[0]), squeeze=False)
    for ax, (im, caption) in zip(axes.ravel(), [p for row in rows for p in row]):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def noise_panels(mask, cfg, seed):
    """Fig. 3: the analog bits of mask (int[h, w, 2]) corrupted to t (Eq. 1, one eps for all panels),
    decoded by thresholding at 0 with no post-processing; one row for b = 1.0, one for b = 0.1, each
    panel titled with the bits' SNR at t (schedule.snr)."""
    eps = torch.randn((1, cfg.n_bits) + mask.shape[:2], generator=torch.Generator().manual_seed(seed))
    rows = []
    for b in (1.0, 0.1):
        m_bits = mask_to_analog(torch.from_numpy(mask)[None], cfg.n_class_bits, cfg.n_identity_bits, b)
        m_crpt = [corrupt(m_bits, torch.tensor([t]), eps) for t in NOISE_TIMES]
        rows.append([(colours(analog_to_mask(m, cfg.n_class_bits, cfg.n_identity_bits)[0].numpy()),
                      f"b={b:g}, t={t:g}, SNR {snr(t, b):.2g}") for m, t in zip(m_crpt, NOISE_TIMES)])
    return rows


def save_run_figure(path, log_rows, samples, title):
    """A training run at a glance: the loss curve (log_rows: dicts with "step" and "loss") beside
    rows of input | ground truth | sample for a few held-out images (samples: (image float[3, S, S],
    gt int[m, m, 2], pred int[m, m, 2]), S a multiple of m; none for a curve alone)."""
    n = max(1, len(samples))
    fig = Figure(figsize=(4 + 1.8 * 3 * bool(samples), max(2.6, 1.8 * n)), layout="constrained")
    grid = fig.add_gridspec(n, 4 if samples else 1, width_ratios=[2.2, 1, 1, 1] if samples else [1])
    ax = fig.add_subplot(grid[:, 0])
    ax.plot([r["step"] for r in log_rows], [r["loss"] for r in log_rows], lw=1)
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.title.set_fontsize(9)
    for k, (image, gt, pred) in enumerate(samples):
        image = np.asarray(image, np.float32).transpose(1, 2, 0)
        r = image.shape[0] // gt.shape[0]  # mask pixel -> r x r image pixels (nearest)
        gt, pred = (m.repeat(r, 0).repeat(r, 1) for m in (gt, pred))
        for j, (im, caption) in enumerate([(image, "input"), (overlay(image, gt), "ground truth"),
                                           (overlay(image, pred), "sample")]):
            a = fig.add_subplot(grid[k, 1 + j])
            a.imshow(im, interpolation="nearest")
            a.set_title(caption, fontsize=8)
            a.axis("off")
    fig.savefig(path, dpi=100)
