"""Images in, masks out: reading image files and video frames, the letterbox geometry that
sample.py, video.py and the COCO reader share, and the colour jitter of training (App. B).

The geometry (the official code's, App. B without jitter): an image is resized, keeping its
aspect ratio, so that its longer side is the model's image_size S (times a jitter scale in
training), and padded at the bottom and right to S x S with the model's Config.pad_value. A mask predicted on that
square is pasted back to the image's own size with nearest neighbour: each image pixel takes the
mask pixel its centre falls in.
"""
import math
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from tqdm import tqdm

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
LARGE_PIXELS = 4096 * 4096  # above this, size_note: the full-size outputs cost memory and time
GB_PER_MPIXEL, SEC_PER_MPIXEL = 0.075, 0.6  # sample.py, measured on an 8000 x 8000 image on one CPU core


def size_note(path, width, height, S, frames=1):
    """A one-line note for an image above LARGE_PIXELS, else None: the model sees it at S px, but its
    mask, vote and files are made at full size; what that costs, and to downscale it."""
    mp = width * height / 1e6
    if width * height <= LARGE_PIXELS:
        return None
    return (f"note: {path} is {width}x{height} ({mp:.0f} megapixels): the model sees it at {S} px, but the mask is "
            f"voted and written at full size, which takes about {GB_PER_MPIXEL * mp:.1f} GB of memory and "
            f"{SEC_PER_MPIXEL * mp * frames:.0f} s on one CPU core and writes large PNGs; downscale it first (e.g. to "
            f"2048 px on the longer side) to get the same masks at that size in seconds")


def _size(path):
    """(width, height) from the file's header, past Pillow's decompression-bomb check."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def too_large(path):
    """The ValueError for an image over Pillow's decompression-bomb limit: its size, the limit, what to do."""
    w, h = _size(path)
    return ValueError(f"{path}: {w}x{h} = {w * h / 1e6:.0f} megapixels, too large to read (the limit is "
                      f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels, Pillow's guard against decompression "
                      f"bombs); downscale it first, e.g. to 4096 px on the longer side")


def _to_rgb(im, path):
    """read_image's conversions of an open image."""
    if getattr(im, "n_frames", 1) > 1:
        tqdm.write(f"note: {path} has {im.n_frames} frames; this segments the first (`python video.py "
                   f"{path}` segments them all, each conditioned on the masks predicted before it)", sys.stderr)
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, np.float32)
        top = max(65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0, a.max())
        im = Image.fromarray((a / top * 255).round().clip(0, 255).astype(np.uint8))
    if im.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im.convert("RGBA"))
    return im.convert("RGB")


def read_image(path):
    """Any image file -> PIL RGB with its EXIF orientation applied. 16/32-bit grey is scaled to 8 bits
    (I;16 by 255/65535; I and F by 255/65535 when above 255, by 255/max above 65535, else as is);
    transparency is composited on black; an animated image gives its first
    frame, with a note. Raises ValueError with a one-line message; an image over Pillow's limit
    against decompression bombs (2 x Image.MAX_IMAGE_PIXELS, ~179 megapixels) is refused as too large."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # size_note says it in words
            with Image.open(path) as im:
                return _to_rgb(im, path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; give the path of an image (PNG, JPEG, ...)") from None
    except Image.DecompressionBombError:
        raise too_large(path) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {str(e).splitlines()[0][:150]}); "
                         f"give a PNG, JPEG or another format Pillow reads") from None


def read_frames(path):
    """A folder of PNG/JPG frames (sorted by name) or an animated image file (GIF, animated PNG or
    WebP, multi-page TIFF) -> list of PIL RGB images."""
    if os.path.isdir(path):
        names = sorted(f for f in os.listdir(path) if f.lower().endswith(FRAME_EXTENSIONS))
        if not names:
            raise ValueError(f"{path}: no .png/.jpg frames in this folder")
        images = [read_image(os.path.join(path, f)) for f in names]
    elif not os.path.exists(path):
        raise ValueError(f"{path}: no such file or folder; give a folder of PNG/JPG frames or an animated image")
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # size_note says it in words
                with Image.open(path) as im:
                    n_frames = getattr(im, "n_frames", 1)
                    images = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
        except Image.DecompressionBombError:
            raise too_large(path) from None
        except (OSError, ValueError) as e:
            if path.lower().endswith(".gif"):
                raise ValueError(f"{path}: not a readable GIF ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:150]})") from None
            raise ValueError(f"{path}: video.py reads an animated image (GIF, PNG, WebP, TIFF) or a folder of "
                             f"PNG/JPG frames; convert it first, e.g. `ffmpeg -i {path} frames/%04d.png`") from None
        if n_frames < 2:
            raise ValueError(f"{path}: one still image; segment it with sample.py, or give video.py an animated "
                             f"image or a folder of frames")
    if len({im.size for im in images}) > 1:
        raise ValueError(f"{path}: the frames differ in size ({sorted({im.size for im in images})[:2]} ...); "
                         f"a video's frames must share one size")
    return images


def scaled_size(height, width, S, scale=1.0):
    """(sh, sw): the image's size once its longer side is scale * S, the aspect ratio kept."""
    f = scale * S / max(height, width)
    return max(1, round(height * f)), max(1, round(width * f))


def to_model_input(im, S, pad_value=0.0):
    """PIL RGB (W x H) -> (float[3, S, S] in [0, 1], (vh, vw) the image's part of the square, the
    rest filled with pad_value: the model's Config.pad_value)."""
    vh, vw = scaled_size(im.height, im.width, S)
    x = np.full((S, S, 3), pad_value, np.float32)
    x[:vh, :vw] = np.asarray(im.resize((vw, vh), Image.BILINEAR), np.float32) / 255
    return torch.from_numpy(x.transpose(2, 0, 1).copy()), (vh, vw)


def nearest(n_out, scale, n_in):
    """For each of n_out target pixels, the source pixel (of n_in) its centre falls in at this scale."""
    return np.minimum(((np.arange(n_out) + 0.5) * scale).astype(np.int64), n_in - 1)


def paste_back(mask, size, valid, S):
    """mask: [m, m, 2] on the padded square (numpy or torch) -> [H, W, 2] at the image's size
    (H, W) = size; valid = (vh, vw) is the image's part of the S x S square."""
    (H, W), (vh, vw), m = size, valid, mask.shape[0]
    rows, cols = nearest(H, vh * m / (H * S), m), nearest(W, vw * m / (W * S), m)
    if isinstance(mask, torch.Tensor):
        rows, cols = torch.from_numpy(rows), torch.from_numpy(cols)
    return mask[rows[:, None], cols[None, :]]


def to_grid(a, valid, S, m):
    """a: [H, W, ...] at the image's size -> [m, m, ...] on the mask grid; the padding gets 0."""
    (H, W), (vh, vw) = a.shape[:2], valid
    out = a[nearest(m, S * H / (m * vh), H)[:, None], nearest(m, S * W / (m * vw), W)[None, :]]
    c = (np.arange(m) + 0.5) * S / m
    out[(c >= vh)[:, None] | (c >= vw)[None, :]] = 0
    return out


# ---------------------------------------------------------------------------------------------
# Colour jitter (App. B: "scale jitter ... and colour jitter" at low resolution; the scale jitter
# is geometry: coco.CocoPanoptic).

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 weights: the grey value of an RGB pixel
YIQ = np.array([LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)  # luma + two chroma axes


def hue_rotate(image, turns):
    """Shift the hue of image (float[..., 3]) by `turns` of the colour wheel: rotate its chroma (I, Q)
    about the grey axis (Y) in YIQ space. Y, so the grey value, and grey pixels are unchanged."""
    a = 2 * math.pi * turns
    R = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], np.float32)
    return image @ (np.linalg.inv(YIQ) @ R @ YIQ).T.astype(np.float32)


def color_jitter(image, strength):
    """SimCLR's colour distortion, as the official panoptic transforms use it (strength 1 at low
    resolution, 0 when fine-tuning at high resolution). With probability 0.8: brightness, contrast
    and saturation factors from U[1 - 0.8 s, 1 + 0.8 s] and a hue shift of U[-0.2 s, 0.2 s] turns, in
    a random order, clipped to [0, 1] after each; then with probability 0.2, grey.
    image: float[H, W, 3] in [0, 1] -> float32[H, W, 3]; s = 0 returns it unchanged. Draws from
    torch's global RNG (as CocoPanoptic's other augmentations)."""
    image = np.asarray(image, np.float32)
    if strength <= 0:
        return image

    def factor(spread):
        return 1 + spread * (2 * torch.rand(()).item() - 1)

    if torch.rand(()).item() < 0.8:
        for op in torch.randperm(4).tolist():
            if op == 0:  # brightness
                image = image * factor(0.8 * strength)
            elif op == 1:  # contrast: about the mean grey value
                mean = (image @ LUMA).mean()
                image = mean + (image - mean) * factor(0.8 * strength)
            elif op == 2:  # saturation: about each pixel's grey value
                grey = (image @ LUMA)[..., None]
                image = grey + (image - grey) * factor(0.8 * strength)
            else:
                image = hue_rotate(image, factor(0.2 * strength) - 1)
            image = np.clip(image, 0, 1)
    if torch.rand(()).item() < 0.2:
        image = np.repeat((image @ LUMA)[..., None], 3, -1)
    return image.astype(np.float32)
