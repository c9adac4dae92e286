"""Pictures a person can look at: segment colours and overlays (sample.py, video.py), an input |
overlay | segments figure with a legend of the classes, grids of panels for the mask across
sampling steps (Fig. 11) and for masks noised to several t at two scales b, titled with their SNR
(Fig. 3), a training run's summary (loss curve beside held-out samples) and the frames of a
video's animated overlay.

Colours: one colour per class (PALETTE: tab10's nine non-grey colours, then hues a golden-ratio
turn apart at four saturation / value levels: 255 distinct colours, one per 8-bit class), so a
legend entry is exactly the colour drawn; segments of one class are told apart by the white lines
drawn where one segment meets another. Void (class or identity 0) is black; a decoded class
beyond the model's classes (a bit pattern that names no class) is NO_CLASS grey.
"""
import matplotlib
import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from matplotlib.patches import Patch
from PIL import Image, ImageDraw, ImageFont

from bits import analog_to_mask, mask_to_analog
from diffusion import corrupt
from schedule import snr

NOISE_TIMES = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 0.9)  # Fig. 3's columns
NO_CLASS = np.array([0.55, 0.55, 0.55], np.float32)


def _palette(n=255):
    """float32[n + 1, 3]: row c is class c's colour, row 0 (void) black."""
    tab = np.delete(np.array(matplotlib.colormaps["tab10"].colors, np.float32), 7, 0)  # without its grey
    k = np.arange(n - len(tab))
    sat, val = np.array([(0.85, 0.95), (0.5, 1.0), (1.0, 0.7), (0.65, 0.8)]).T[:, k % 4]
    more = hsv_to_rgb(np.stack([(k * 0.618034 + 0.05) % 1, sat, val], -1)).astype(np.float32)
    return np.concatenate([np.zeros((1, 3), np.float32), tab, more])


PALETTE = _palette()


def aspect(h, w):
    """h / w kept within [1/4, 4] for a figure's size (imshow keeps the true aspect inside it), so
    that a 3 x 2000 image does not ask for a figure thousands of inches tall."""
    return min(4.0, max(0.25, h / w))


def colours(mask, n_classes=None, shade=False, segments=False):
    """mask: int[..., 2] -> float32[..., 3] in [0, 1]: PALETTE[class], void black, classes above
    n_classes (when given) NO_CLASS. shade: each identity a shade of its class's colour (55-100% of
    it, fixed by the identity), so that a segment keeping its identity keeps its shade (video).
    segments: a colour per identity instead (a class-agnostic mask, whose one class says nothing)."""
    cls = np.minimum(mask[..., 0], len(PALETTE) - 1)
    if segments:
        cls = np.where(mask[..., 0] > 0, 1 + (mask[..., 1] - 1) % (len(PALETTE) - 1), 0)
    rgb = PALETTE[np.where(mask[..., 1] > 0, cls, 0)]
    if n_classes is not None:
        rgb[mask[..., 0] > n_classes] = NO_CLASS
    if shade:
        rgb = rgb * (0.55 + 0.45 * ((mask[..., 1] * 0.6180339887) % 1))[..., None].astype(np.float32)
    return rgb


def overlay(image, mask, tint=0.55, rows=512, shade=False, segments=False):
    """image: uint8 or float in [0, 1], [H, W, 3]; mask: int[H, W, 2] -> uint8[H, W, 3]: segments
    tinted with their class colour (tint = 1: the colours alone; segments: a colour per segment), a
    white line where one segment meets another. Works on `rows` rows at a time, so a large image costs a few of its own copies."""
    out = np.empty(mask.shape[:2] + (3,), np.uint8)
    for r in range(0, mask.shape[0], rows):
        m = mask[r:r + rows]
        im = np.asarray(image[r:r + rows], np.float32) / (255 if image.dtype == np.uint8 else 1)
        block = np.where(((m[..., 0] > 0) & (m[..., 1] > 0))[..., None], (1 - tint) * im + tint * colours(m, shade=shade, segments=segments),
                         im)
        above = mask[max(0, r - 1):r + rows]  # with the row above, for the edges between blocks
        key = above[..., 0].astype(np.int64) * 65536 + above[..., 1]
        edge = np.zeros(key.shape, bool)
        edge[1:] |= key[1:] != key[:-1]
        edge[:, 1:] |= key[:, 1:] != key[:, :-1]
        block[edge[len(above) - len(m):]] = 1.0
        out[r:r + rows] = (block * 255).round().astype(np.uint8)
    return out


def legend_handles(classes, categories, void=False, no_class=False, counts=False, segments=False):
    """Patches for a legend: one per class in `classes` (a list, a class per segment) in its PALETTE
    colour, labelled with its name (counts: and its number of segments), then black for void and
    NO_CLASS grey for decoded classes that are no class, where they occur. segments (a class-agnostic
    mask drawn a colour per segment): one entry saying so instead of the classes."""
    handles = [Patch(color=PALETTE[c], label=categories[c]["name"] + (
        f": {classes.count(c)} segment" + "s" * (classes.count(c) > 1) if counts else ""))
        for c in sorted(set(classes))]
    if segments:
        handles = [Patch(facecolor=PALETTE[1], edgecolor=PALETTE[2], hatch="//", label=(
            f"{len(classes)} segments, " if counts else "") + "a colour each (class-agnostic)")]
    if void:
        handles.append(Patch(color="k", label="void (no segment)"))
    if no_class:
        handles.append(Patch(color=NO_CLASS, label="bits that decode to no class"))
    return handles


def save_figure(path, images, titles, classes, categories, void=False, known=None, segments=False):
    """Images side by side (input, overlay, the segments in their colours, each at most ~800 pixels
    wide) with a legend beside the last: each class present (`classes`: the class of each segment)
    in its colour with its number of segments, and void. known (bool[H, W], inpainting): the last
    panel hatches the pixels the model sampled and outlines those given. Returns the Figure."""
    step = max(1, max(images[0].shape[:2]) // 800)
    fig = Figure(figsize=(4.5 * len(images), 3.5 * aspect(*images[0].shape[:2]) + 0.5), layout="constrained")
    axes = fig.subplots(1, len(images))
    for ax, im, title in zip(axes, images, titles):
        ax.imshow(im[::step, ::step], interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    handles = legend_handles(classes, categories, void, counts=True, segments=segments)
    if known is not None:
        given = known[::step, ::step].astype(np.float32)
        with matplotlib.rc_context({"hatch.color": "white", "hatch.linewidth": 1.5}):
            axes[-1].contourf(given, levels=[-0.5, 0.5], colors="none", hatches=["///"])
        axes[-1].contour(given, levels=[0.5], colors="yellow", linewidths=1.5)
        with matplotlib.rc_context({"hatch.color": "black"}):
            handles += [Patch(facecolor="white", edgecolor="black", hatch="///", label="hatched: sampled"),
                        Patch(facecolor="none", edgecolor="yellow", lw=1.5, label="inside yellow: given (--known)")]
    axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False,
                    title=None if segments else "class: segments")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def save_panels(path, rows, title, handles=()):
    """A grid figure of rows of (image, caption) panels, with a legend of handles below them."""
    h, w = rows[0][0][0].shape[:2]
    fig = Figure(figsize=(1.7 * len(rows[0]), (1.7 * aspect(h, w) + 0.4) * len(rows) + 0.3 + 0.4 * bool(handles)),
                 layout="constrained")
    axes = fig.subplots(len(rows), len(rows[0]), squeeze=False)
    for ax, (im, caption) in zip(axes.ravel(), [p for row in rows for p in row]):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    if handles:
        fig.legend(handles=list(handles), loc="outside lower center", ncol=min(4, len(handles)), fontsize=8,
                   frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def save_mask_grid(path, masks, categories, title, per_row=4, side=128):
    """Masks (int[n, m, m, 2]) in a grid, each drawn in its class colours with a white line where
    one segment meets another (so two segments of a class show as two), at least `side` pixels a
    side, with the legend of the classes drawn."""
    up = max(1, side // masks.shape[1])
    panels = [(overlay(np.zeros((m.shape[0] * up, m.shape[1] * up, 3), np.float32),
                       m.repeat(up, 0).repeat(up, 1), tint=1), f"sample {i + 1}") for i, m in enumerate(masks)]
    blank = (np.ones_like(panels[0][0]) * 255, "")
    panels += [blank] * (-len(panels) % per_row)
    rows = [panels[i:i + per_row] for i in range(0, len(panels), per_row)]
    return save_panels(path, rows, title, mask_legend(list(masks), categories, len(categories)))


def save_sweep_plot(path, results, title):
    """Fig. 6 from coco_sweep's rows: PQ against sampling steps, one line per td (rows sampled from
    scratch only), steps on a log axis."""
    fig = Figure(figsize=(4.8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    rows = [r for r in results if not r["drop"]]
    for td in sorted({r["td"] for r in rows}):
        pts = sorted((r["steps"], 100 * r["pq"]) for r in rows if r["td"] == td)
        ax.plot(*zip(*pts), marker="o", label=f"td = {td:g}")
    ax.set(xscale="log", xlabel="sampling steps", ylabel="PQ (%)", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
    return fig


def noise_panels(mask, cfg, seed):
    """Fig. 3: the analog bits of mask (int[h, w, 2]) corrupted to t (Eq. 1, one eps for all panels),
    each bit read as 1 where its noised value is > 0, decoded with no post-processing: void black,
    patterns of no class NO_CLASS grey. One row for b = 1.0, one for b = 0.1, each panel titled
    with the bits' SNR at t (schedule.snr). Returns (rows, the decoded masks)."""
    eps = torch.randn((1, cfg.n_bits) + mask.shape[:2], generator=torch.Generator().manual_seed(seed))
    rows, decoded = [], []
    for b in (1.0, 0.1):
        m_bits = mask_to_analog(torch.from_numpy(mask)[None], cfg.n_class_bits, cfg.n_identity_bits, b)
        row = []
        for t in NOISE_TIMES:
            decoded.append(analog_to_mask(corrupt(m_bits, torch.tensor([t]), eps), cfg.n_class_bits,
                                          cfg.n_identity_bits)[0].numpy())
            row.append((colours(decoded[-1], cfg.n_classes), f"b={b:g}, t={t:g}, SNR {snr(t, b):.2g}"))
        rows.append(row)
    return rows, decoded


def mask_legend(masks, categories, n_classes, segments=False):
    """legend_handles for what colours() draws of these masks (int[..., 2]) with n_classes."""
    cls = np.concatenate([m[..., 0][m[..., 1] > 0].ravel() for m in masks])
    void = any(((m[..., 0] == 0) | (m[..., 1] == 0)).any() for m in masks)
    present = np.unique(cls).tolist()
    return legend_handles([c for c in present if 0 < c <= n_classes], categories, void,
                          any(c > n_classes for c in present), segments=segments)


def save_run_figure(path, log_rows, samples, title, categories, row_labels=None, segments=False):
    """A training run at a glance: the loss curve (log_rows: dicts with "step" and "loss"; a marker per
    point when there are few) beside rows of input | ground truth | sample for a few held-out images
    (samples: (image float[3, S, S], gt int[m, m, 2], pred int[m, m, 2]), S a multiple of m; none for
    a curve alone; row_labels: a label per row, e.g. video frames). The masks are drawn in their
    colours alone (the input is beside them), so the legend of their classes is what is drawn
    (segments: class-agnostic masks, a colour per segment)."""
    n = max(1, len(samples))
    fig = Figure(figsize=(4 + 1.8 * 3 * bool(samples), max(2.6, 1.8 * n) + 0.5 * bool(samples)),
                 layout="constrained")
    grid = fig.add_gridspec(n, 4 if samples else 1, width_ratios=[2.2, 1, 1, 1] if samples else [1])
    ax = fig.add_subplot(grid[:, 0])
    ax.plot([r["step"] for r in log_rows], [r["loss"] for r in log_rows], lw=1,
            marker="o" if len(log_rows) <= 60 else None, ms=3)
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.title.set_fontsize(9)
    for k, (image, gt, pred) in enumerate(samples):
        image = np.asarray(image, np.float32).transpose(1, 2, 0)
        r = image.shape[0] // gt.shape[0]  # mask pixel -> r x r image pixels (nearest)
        gt, pred = (m.repeat(r, 0).repeat(r, 1) for m in (gt, pred))
        black = np.zeros_like(image)  # void: black, as the legend says
        for j, (im, caption) in enumerate([(image, "input"), (overlay(black, gt, tint=1, segments=segments),
                                                              "ground truth"),
                                           (overlay(black, pred, tint=1, segments=segments), "sample")]):
            a = fig.add_subplot(grid[k, 1 + j])
            a.imshow(im, interpolation="nearest")
            a.set_title(caption, fontsize=8)
            a.set(xticks=[], yticks=[])
            if j == 0 and row_labels:
                a.set_ylabel(row_labels[k], fontsize=8)
    if samples:
        handles = mask_legend([m for _, g, p in samples for m in (g, p)], categories, len(categories), segments)
        fig.legend(handles=handles, loc="outside lower right", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
    return fig


def legend_strip(classes, categories, width, void=False):
    """uint8[h, width, 3]: a colour square and the name of each class (and black "void"), in rows on
    dark grey, for the frames of a video."""
    font = ImageFont.load_default(14)
    entries = [(tuple((PALETTE[c] * 255).round().astype(int).tolist()), categories[c]["name"])
               for c in sorted(set(classes))] + [((0, 0, 0), "void")] * void
    items, x, y = [], 6, 4
    for colour, name in entries:
        w = 34 + int(font.getlength(name))
        if x + w > width and x > 6:
            x, y = 6, y + 20
        items.append((x, y, colour, name))
        x += w
    strip = Image.new("RGB", (width, y + 24), (48, 48, 48))
    draw = ImageDraw.Draw(strip)
    for x, y, colour, name in items:
        draw.rectangle([x, y + 2, x + 14, y + 16], fill=colour, outline=(160, 160, 160))
        draw.text((x + 20, y + 1), name, fill="white", font=font)
    return np.asarray(strip)


def video_frames(images, masks, categories, min_side=256):
    """The frames (uint8[H, W, 3] each) and their masks as frames of an animated image a person can
    watch: the overlay beside the segments in their colours (void black), both enlarged by a whole
    factor (nearest) until the shorter side is at least min_side, above a legend_strip of the
    classes in any frame. The right half shades each identity within its class's colour (colours'
    shade), so a thing tracked under one identity keeps one shade from frame to frame, and one
    that changes identity changes shade. Returns PIL images."""
    h, w = images[0].shape[:2]
    r = max(1, -(-min_side // min(h, w)))
    classes = sorted(set(np.concatenate([m[..., 0][m[..., 1] > 0] for m in masks]).tolist()) & set(categories))
    void = any(((m[..., 0] == 0) | (m[..., 1] == 0)).any() for m in masks)
    strip = legend_strip(classes, categories, 2 * w * r, void)
    out = []
    for image, m in zip(images, masks):
        pair = np.concatenate([overlay(image, m), overlay(np.zeros_like(image), m, tint=1, shade=True)], 1)
        out.append(Image.fromarray(np.concatenate([pair.repeat(r, 0).repeat(r, 1), strip])))
    return out
