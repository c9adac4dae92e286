"""Pix2Seq-D: Bit Diffusion of panoptic masks conditioned on the image (Sec. 3, Alg. 1 and 2).

corrupt()    Eq. 1: m_crpt = sqrt(gamma(t)) m_bits + sqrt(1 - gamma(t)) eps
ddim_step()  App. A Alg. 4: clip x0 to [-b, b], recover eps, step to t_next
Pix2SeqD     the encoder (run once per image) and the mask decoder (iterated);
             train_loss is Alg. 1, infer is Alg. 2 (with majority-vote post-processing).
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

import kernels
from bits import analog_to_mask, check_mask, mask_to_analog
from decoder import MaskDecoder
from encoder import ImageEncoder
from identities import majority_vote, match_identities, rename
from losses import expected_bits, l2_loss, size_weights, softmax_ce
from schedule import gamma, time_pairs


def gamma_of(t, x):
    """gamma(t) in float64 (1 - gamma is tiny near t = 0) to broadcast over x: float[B, ...]. t: a
    float -> a 0-dim CPU tensor, a scalar to x's ops (x's dtype and device, no copy to the device);
    float[B] -> [B, 1, ...] on x's device."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return gamma(t.to(x.device).view(-1, *([1] * (x.dim() - 1))) if t.dim() else t)


def corrupt(m_bits, t, eps):
    """Eq. 1. m_bits, eps: float[B, n, h, w]; t: float[B] in [0, 1] (or one float)  ->  m_crpt,
    computed in float64."""
    g = gamma_of(torch.as_tensor(t).reshape(-1), m_bits)
    return (g.sqrt() * m_bits + (1 - g).sqrt() * eps).to(m_bits.dtype)


def check_eta(eta):
    """ValueError unless eta is a sampler's eta (ddim_step): 0 DDIM, 1 DDPM, or between."""
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1] (0: DDIM, 1: DDPM), got {eta}")


def ddim_step(x_t, x_pred, t_now, t_next, scale=0.1, eta=0.0, noise=None):
    """Alg. 4: estimate x at t_next from x_t and the predicted x0 (x_pred). x_t, x_pred:
    float[B, ...]; t_now, t_next: floats (the sampler's), or float[B] tensors (one per example).

    eta (DDIM's eta, Song et al. 2021, Eq. 12): 0 is Alg. 4, deterministic; 1 is DDPM's ancestral
    step (Sec. 2 names both transition rules), a draw from q(x_next | x_t, x0): of the noise
    variance 1 - gamma_next at t_next, sigma^2 = eta^2 (1 - g_next) / (1 - g_now) (1 - g_now / g_next)
    is fresh noise (`noise`, standard normal like x_t; drawn here if None), the rest is eps."""
    per_example = any(isinstance(t, torch.Tensor) and t.dim() for t in (t_now, t_next))
    check_eta(eta)
    if kernels.enabled(x_t) and not per_example and eta == 0:
        from kernels.ddim import ddim_step as ddim_step_kernel
        return ddim_step_kernel(x_t, x_pred, t_now, t_next, scale)
    g_now, g_next = gamma_of(t_now, x_t), gamma_of(t_next, x_t)  # 0-dim for one time: x's dtype is kept
    x_pred = x_pred.clamp(-scale, scale)
    eps = (x_t - g_now.sqrt() * x_pred) / (1 - g_now).sqrt()
    if eta == 0:
        return (g_next.sqrt() * x_pred + (1 - g_next).sqrt() * eps).to(x_t.dtype)
    var = (eta ** 2 * (1 - g_next) / (1 - g_now) * (1 - g_now / g_next)).clamp(min=0)
    noise = torch.randn_like(x_t) if noise is None else noise
    return (g_next.sqrt() * x_pred + (1 - g_next - var).sqrt() * eps + var.sqrt() * noise).to(x_t.dtype)


def ce_and_m_pred(m_logits, target, weights, scale):
    """Sec. 3.2's loss and the analog bits it implies: (per-pixel weighted CE float[B, h, w], or
    None without a target; m_pred float[B, n_bits, h, w]). One fused Triton kernel on CUDA
    (kernels/softmax_ce.py), the references of losses.py otherwise."""
    if kernels.enabled(m_logits):
        from kernels.softmax_ce import weighted_softmax_ce
        return weighted_softmax_ce(m_logits, target, weights, scale)
    loss = softmax_ce(m_logits, target, weights) if target is not None else None
    return loss, expected_bits(m_logits, scale)


ARCH = 2  # the architecture's version, saved in each checkpoint's config (1: before the official TransUNet)


@dataclass
class Config:
    """Sizes and knobs. Defaults are the paper's model as the authors' release builds it (App. B;
    configs/config_diffusion_panoptic_image.py, train_high_res): 94,492,480 parameters."""
    n_classes: int = 133           # C real classes, ids 1..C (0 is void)
    n_class_bits: int = 8
    n_identity_bits: int = 8
    image_size: int = 1024
    mask_size: int = 512
    scale: float = 0.1             # b, the input scaling (Table 3)
    p: float = 0.2                 # loss weighting exponent (Table 5)
    loss: str = "ce"               # "ce" (Sec. 3.2) or "l2" (Table 4 baseline)
    pad_value: float = 0.3         # the grey that fills a non-square image's square (official transforms)
    normalize_images: bool = False  # subtract ImageNet's mean, divide by its std (official: [0, 1] pixels as they are)
    size_offset: int = 1           # loss weight (1 / (c + size_offset))^p: 1 official, 0 the paper's text
    group_mean: bool = True        # the loss averages its two softmax groups (official) or sums them
    # image encoder
    resnet_widths: tuple = (64, 128, 256)
    resnet_depths: tuple = (3, 4, 6)
    resnet_stem: int = 64
    resnet_stem_stride: int = 4    # 2 for small images: ResNet maps at strides 2, 4, 8
    resnet_norm: str = "batch"     # "batch" (official) or "group"
    enc_dim: int = 512
    enc_layers: int = 12           # the release's 12 (the paper's text: 6)
    enc_heads: int = 16
    enc_mlp: int = 2048
    enc_drop_path: float = 0.1     # drop-path in the encoder's transformer layers, training only
    enc_drop_units: float = 0.1    # dropout on the ResNet features and inside the encoder's MLPs
    feat_dim: int = 256
    # mask decoder
    dec_base: int = 128
    dec_mults: tuple = (1, 1, 2, 2)
    dec_dim: int = 512
    dec_layers: int = 6
    dec_heads: int = 8
    zero_init_out: bool = True     # the output conv starts near zero (official) or at PyTorch's default
    dec_resample: str = "conv"     # "conv": stride-2 conv down, 3x3 conv after nearest up (official); "pool"
    rescale_noisy_input: bool = False  # divide m_t by its standard deviation (Pix2SeqD.decoder_out)
    self_cond: bool = False        # the decoder also reads its previous estimate of the bits (Pix2SeqD.train_loss)
    n_past: int = 0                # past masks fed to the decoder (video, Sec. 3.4: 2)
    unconditional: bool = False    # no image: the decoder learns masks alone (App. B's pre-training; Pix2SeqD.encode)
    arch: int = ARCH

    @property
    def n_bits(self):
        return self.n_class_bits + self.n_identity_bits

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """A saved config; a field it lacks predates it and takes the value of then (no `arch`:
        architecture 1; ImageNet-normalised images, c^-p weights, summed softmax groups)."""
        d = {"arch": 1, "normalize_images": True, "size_offset": 0, "group_mean": False, **d}
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = tuple(v)
        return cls(**d)


def paper_config(**overrides):
    """The paper's model: ResNet-50 (to stride 16) + 12 transformer layers; TransUNet decoder."""
    return Config(**overrides)


def tiny_config(**overrides):
    """The same architecture sized down to train on a CPU on the built-in 64x64 shapes in minutes,
    with the choices a short CPU run needs (docs/departures.md): GroupNorm in the ResNet, no
    dropout, the output conv at PyTorch's default init, m_t rescaled, the decoder resampled by
    pooling and plain upsampling (no resampling convs), and input scaling b = 0.3 (on the shapes
    it learns several times faster than the paper's 0.1: docs/results.md). It keeps the loss and
    image conventions it was measured with: ImageNet-normalised images, weights c^-p, the two
    softmax groups' losses summed."""
    c = dict(n_classes=5, n_class_bits=3, n_identity_bits=3, image_size=64, mask_size=32, scale=0.3,
             resnet_widths=(8, 16, 32), resnet_depths=(1, 1, 2), resnet_stem=32, resnet_stem_stride=2,
             resnet_norm="group", enc_dim=128, enc_layers=2, enc_heads=4, enc_mlp=256, enc_drop_path=0.0,
             enc_drop_units=0.0, feat_dim=32, dec_base=24, dec_mults=(1, 2, 4), dec_dim=128, dec_layers=2,
             dec_heads=4, zero_init_out=False, rescale_noisy_input=True, dec_resample="pool",
             normalize_images=True, size_offset=0, group_mean=False)
    c.update(overrides)
    return Config(**c)


PRESETS = {"tiny": tiny_config, "paper": paper_config}

IMAGE_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # ImageNet statistics
IMAGE_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Pix2SeqD(nn.Module):
    """Sec. 3.1's encoder-decoder: the image encoder runs once per image, the mask decoder once
    per diffusion step. train_loss is Alg. 1, infer is Alg. 2 (with the DDIM step of Alg. 4)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        if cfg.loss not in ("ce", "l2"):
            raise ValueError(f"loss must be 'ce' or 'l2', got {cfg.loss!r}")
        if cfg.mask_size % 2 ** (len(cfg.dec_mults) - 1):
            raise ValueError(f"mask_size {cfg.mask_size} must be divisible by 2**{len(cfg.dec_mults) - 1}")
        if cfg.image_size % (4 * cfg.resnet_stem_stride):
            raise ValueError(f"image_size {cfg.image_size} must be a multiple of {4 * cfg.resnet_stem_stride}")
        if cfg.arch != ARCH:
            raise ValueError(f"a config of architecture {cfg.arch}; this code builds architecture {ARCH}")
        self.encoder = ImageEncoder(cfg)
        groups = (cfg.n_class_bits, cfg.n_identity_bits)
        if cfg.loss == "ce" and groups[0] != groups[1]:
            raise ValueError("the ce loss needs equal class and identity bit counts (one logits tensor)")
        out = 2 * 2 ** cfg.n_class_bits if cfg.loss == "ce" else cfg.n_bits
        self.decoder = MaskDecoder(cfg, out)

    def encode(self, images):
        """The pixel encoder, run once per image. images: float[B, 3, H, W] in [0, 1], letterboxed
        with pad_value -> (feats [B, feat_dim, h, w], tokens [B, N, enc_dim]); h = H mask_size /
        image_size (the official merge upsamples by a fixed factor, so a model built at one size
        reads images of another with the same ratio)."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.dtype.is_floating_point:
            raise ValueError(f"images must be float[B, 3, H, W] in [0, 1], got {images.dtype} {list(images.shape)}")
        images = images.to(next(self.parameters()).dtype)  # float64 / float16 images on float32 weights
        # (the model itself runs in float32, bf16 through autocast)
        c = self.cfg
        size = tuple(n * c.mask_size // c.image_size for n in images.shape[-2:])
        if c.unconditional:  # App. B's stage 0, the official conditional='none': the encoder is not run; the
            # decoder reads zeros of the pyramid merge's shape and has no tokens to cross-attend to
            return images.new_zeros(images.shape[0], c.feat_dim, *size), None
        if c.normalize_images:
            images = (images - IMAGE_MEAN.to(images)) / IMAGE_STD.to(images)
        return self.encoder(images, size)

    def checkpoint_activations(self, on=True):
        """train.py --checkpoint-activations: the encoder's transformer layers and the decoder's
        residual and transformer blocks keep no activations for the backward pass and recompute
        them there (encoder.call): the same gradients for about a third more compute."""
        self.encoder.remat = self.decoder.remat = on

    def decoder_out(self, m_t, h, t, past=None, m_prev=None):
        """One pass of the mask decoder. m_t: float[B, n_bits, h, w]; t: float[B]. Returns
        m_logits float[B, 2, K, h, w] (ce loss), or m_pred float[B, n_bits, h, w] (l2 loss).

        cfg.rescale_noisy_input (the tiny preset's departure): m_t is divided by its standard
        deviation under Eq. 1, sqrt(gamma b^2 + 1 - gamma), before the decoder sees it (a fixed,
        invertible rescaling given t, as in EDM's c_in; the official code has the option
        normalize_noisy_input, by the sample's own standard deviation, off in its configs, and this
        analytic form beside it, commented out). The paper feeds m_t as is; unscaled +-0.1 bits took
        the tiny model many times longer to learn to read (measured: identity accuracy on clean
        input 0.25 vs 0.83 after 40 steps).

        m_prev (cfg.self_cond): the previous estimate of the bits, float[B, n_bits, h, w] in [-b, b],
        or None (zeros: none yet); the decoder reads it divided by b, as past_bits."""
        n_past = self.cfg.n_past * self.cfg.n_bits
        if past is None and n_past:  # a video model without past frames: zeros (Sec. 3.4, first frame)
            past = m_t.new_zeros(m_t.shape[0], n_past, *m_t.shape[2:])
        if past is not None and past.shape[1] != n_past:
            raise ValueError(f"past must have {n_past} channels (n_past={self.cfg.n_past} masks of "
                             f"{self.cfg.n_bits} bits), got {list(past.shape)}")
        g = gamma_of(t, m_t)  # float64[B, 1, 1, 1], for the rescaling
        m_in = m_t / (g * self.cfg.scale ** 2 + 1 - g).sqrt().to(m_t.dtype) if self.cfg.rescale_noisy_input else m_t
        if self.cfg.self_cond:
            m_prev = m_t.new_zeros(m_t.shape) if m_prev is None else m_prev / self.cfg.scale
        # the decoder is told gamma(t) computed in float32, as the official code computes it: the time features
        # take gamma * 1e4 as an angle, where the float64 value's one-ulp difference moves the logits by ~1e-4
        g_in = gamma(torch.as_tensor(t, dtype=torch.float32).to(m_t.device).reshape(-1)).to(m_t.dtype)
        out = self.decoder(m_in, *h, g_in, past, m_prev if self.cfg.self_cond else None)
        B, _, H, W = out.shape
        return out.view(B, 2, 2 ** self.cfg.n_class_bits, H, W) if self.cfg.loss == "ce" else out

    def decode(self, m_t, h, t, past=None, m_prev=None):
        """Alg. 2's mask_decoder: -> (m_logits or None with the l2 loss, m_pred)."""
        out = self.decoder_out(m_t, h, t, past, m_prev)
        if self.cfg.loss == "l2":
            return None, out
        return out, ce_and_m_pred(out, None, None, self.cfg.scale)[1]

    def past_bits(self, prev, keep=None):
        """The decoder's past input. prev: long[B, n_past, h, w, 2], oldest first (t-2, t-1);
        keep: bool[B, n_past] or None (all kept) -> float[B, n_past * n_bits, h, w]: clean analog
        bits of each past mask, zeros where it is absent or dropped (the official code).

        Departure: the bits are divided by b (so +-1), as decoder_out divides m_t by its standard
        deviation (clean bits have std b). At +-0.1 the past was 10x weaker than the decoder's other
        inputs, and a 300-step fine-tune learnt to copy only half of the things' identities from it
        (given gt past masks, 52%; teacher-forced identity accuracy)."""
        B, n, h, w, _ = prev.shape
        m = self.to_bits(prev.reshape(B * n, h, w, 2)).view(B, n * self.cfg.n_bits, h, w) / self.cfg.scale
        if keep is None:
            return m
        return m * keep.to(m.dtype).repeat_interleave(self.cfg.n_bits, 1)[..., None, None]

    def to_bits(self, masks, check=True):
        """masks: long[B, h, w, 2] -> m_bits float[B, n_bits, h, w] (the fused kernel on CUDA)."""
        c = self.cfg
        if kernels.enabled(masks):
            from kernels.bits import mask_to_analog as mask_to_analog_kernel
            return mask_to_analog_kernel(masks, c.n_class_bits, c.n_identity_bits, c.scale, check=check)
        return mask_to_analog(masks, c.n_class_bits, c.n_identity_bits, c.scale)

    def train_loss(self, images, masks, past=None, t=None, eps=None, u=None):
        """Alg. 1. images: float[B, 3, H, W]; masks: long[B, h, w, 2], h = H mask_size / image_size
        -> (loss, stats).
        t: float[B], eps: float[B, n_bits, h, w] and u: float[B] are drawn here unless given
        (train.py gives them so that an example's noise does not depend on how a batch is split
        over processes).

        Self-conditioning (cfg.self_cond; Analog Bits, Chen et al. 2023, Alg. 1 with self_cond): for
        the examples with u < 0.5 the decoder first estimates the bits from m_crpt alone, without
        gradient, and the trained pass reads that estimate; the others read zeros, as the first
        sampling step does. The official code has it as an option, off in its panoptic configs."""
        c = self.cfg
        check_mask(masks, c.n_class_bits, c.n_identity_bits)
        if masks.shape[0] == 0:
            raise ValueError("train_loss got an empty batch: the mean loss of no examples is undefined")
        size = tuple(n * c.mask_size // c.image_size for n in images.shape[-2:])  # encode's feature size
        if masks.shape[1:3] != size or images.shape[0] != masks.shape[0]:
            raise ValueError(f"masks {list(masks.shape)} do not match images {list(images.shape)} at "
                             f"image_size {c.image_size} / mask_size {c.mask_size} ({list(size)} masks)")
        h = self.encode(images)
        m_bits = self.to_bits(masks, check=False)
        t = torch.rand(masks.shape[0], device=masks.device) if t is None else t
        m_crpt = corrupt(m_bits, t, torch.randn_like(m_bits) if eps is None else eps)
        weights = size_weights(masks[..., 1], c.p, c.size_offset)
        m_prev = self.self_cond_estimate(m_crpt, h, t, past, u) if c.self_cond else None
        out = self.decoder_out(m_crpt, h, t, past, m_prev)
        if c.loss == "ce":  # m_logits -> per-pixel weighted CE (one fused kernel on CUDA)
            loss = ce_and_m_pred(out, masks, weights, c.scale)[0].mean() / (2 if c.group_mean else 1)
        else:  # out is m_pred
            loss = l2_loss(out, m_bits, weights).mean()
        return loss, {"loss": loss.item()}

    def self_cond_estimate(self, m_crpt, h, t, past=None, u=None):
        """Training's first pass: m_pred (no gradient) of the examples with u < 0.5, zeros for the rest."""
        u = torch.rand(m_crpt.shape[0], device=m_crpt.device) if u is None else u
        idx = (u < 0.5).nonzero()[:, 0]
        m_prev = torch.zeros_like(m_crpt)
        if len(idx):
            with torch.no_grad():
                h_sel = tuple(None if x is None else x[idx].detach() for x in h)
                m_prev[idx] = self.decode(m_crpt[idx], h_sel, t[idx], None if past is None else past[idx])[1] \
                    .to(m_prev.dtype)
        return m_prev

    @torch.no_grad()
    def infer(self, images, steps=20, td=2.0, min_pixels=0, past=None, known=None, known_region=None,
              trajectory=False, vote=True, eta=0.0):
        """Alg. 2. images: float[B, 3, H, W] -> long[B, h, w, 2], majority-voted at mask size
        (identities.majority_vote with min_pixels), or with vote=False the decoded bits as they are,
        for a caller that votes once at the size it scores or writes (the image's own size).

        known/known_region: inpainting (LDMSeg Sec. 3.3 adapted to analog bits): known: long[B, h,
        w, 2], known_region: bool[B, h, w]; at each step the known pixels of m_t are replaced by the
        known mask's bits noised to t_now, and they are copied into the answer at the end.
        Departure from LDMSeg: identities are names, defined up to a permutation (training permutes
        them afresh per draw), so the known mask's identities are renamed, before each step, to the
        ones the previous step's prediction gives those pixels (match_identities), and the answer's
        identities are renamed back at the end. Replacing the known bits as given made the model's
        own identity for a segment and the one its known blocks carry fight: with 10% of the
        ground truth known in 4x4 blocks, the blocks came out as extra segments beside the model's
        (PQ 45.8, below the 63.1 of sampling from scratch; renamed: 63.9; README "PQ sweeps").
        trajectory=True also returns the list of decoded masks after each step (Fig. 11).
        eta: ddim_step's; 0 (Alg. 2's DDIM) or up to 1 (DDPM's ancestral steps)."""
        c = self.cfg
        if (known is None) != (known_region is None):
            raise ValueError("inpainting needs both known (long[B, h, w, 2]) and known_region (bool[B, h, w])")
        check_eta(eta)  # before the encoder runs
        h = self.encode(images)
        B, S = images.shape[0], h[0].shape[-1]  # S: the mask size (cfg.mask_size for images of cfg.image_size)
        m_t = torch.randn((B, c.n_bits, S, S), device=images.device)
        if known is not None:
            region, known = known_region.to(images.device), known.to(images.device)
            check_mask(known, c.n_class_bits, c.n_identity_bits)
            if known.shape != (B, S, S, 2) or region.shape != known.shape[:3] or region.dtype != torch.bool:
                raise ValueError(f"known must be long[{B}, {S}, {S}, 2] and known_region bool[{B}, {S}, {S}], "
                                 f"got {known.dtype}{list(known.shape)} and {region.dtype}{list(region.shape)}")
            K, n = 2 ** c.n_identity_bits, S ** 2
            pixel = torch.where(region, torch.arange(n, device=region.device).view(region.shape[1:]), n)
            first = torch.full((B, K), n, device=region.device).scatter_reduce(
                1, known[..., 1].flatten(1), pixel.flatten(1), "amin")
            pi = torch.arange(K, device=region.device).repeat(B, 1)  # known identity -> the model's
        path, m_pred = [], None  # m_pred: the last estimate (self-conditioning reads it)
        for t_now, t_next in time_pairs(steps, td):
            t = torch.full((B,), t_now, device=images.device)
            if known is not None:
                k_bits = self.to_bits(rename(known, pi), check=False)
                m_t = torch.where(region[:, None], corrupt(k_bits, t, torch.randn_like(m_t)), m_t)
            _, m_pred = self.decode(m_t, h, t, past, m_pred)
            m_t = ddim_step(m_t, m_pred, t_now, t_next, c.scale, eta)
            if known is not None or trajectory:
                masks = self.decode_bits(m_pred, min_pixels)
            if known is not None:
                pi = match_identities(masks[..., 1], known[..., 1], region, first)
                masks = rename(masks, pi.argsort(1))
            if trajectory:
                path.append(masks)
        if known is None:
            masks = self.decode_bits(m_pred, min_pixels, vote)
        else:
            masks = torch.where(region[..., None], known, masks)
        return (masks, path) if trajectory else masks

    def decode_bits(self, m_pred, min_pixels=0, vote=True):
        """Analog bits -> mask (threshold at 0), then (vote) majority vote."""
        c = self.cfg
        if kernels.enabled(m_pred):
            from kernels.bits import analog_to_mask as analog_to_mask_kernel
            mask = analog_to_mask_kernel(m_pred, c.n_class_bits, c.n_identity_bits)
        else:
            mask = analog_to_mask(m_pred, c.n_class_bits, c.n_identity_bits)
        return majority_vote(mask, c.n_classes, min_pixels) if vote else mask
