"""LDMSeg (Van Gansbeke and De Brabandere, "A Simple Latent Diffusion Approach for Panoptic
Segmentation and Mask Inpainting"): the other diffusion route to a panoptic mask. Pix2Seq-D
diffuses the mask's analog bits in pixel space; LDMSeg compresses the mask into continuous
latents first and diffuses those, conditioned on the image's latents.

Sec. 3.1, stage 1   the mask autoencoder: f_t encodes the 7 analog bits of each pixel's segment
                    id (ids drawn at random from 1..127, void 0) into 4 latent channels at 1/8
                    (tiny: 1/2) of the mask's side; g decodes them to 128 id logits. Trained with
                    cross-entropy (void ignored) + a per-segment BCE + Dice mask loss: ae_loss.
Sec. 3.1, stage 2   latent diffusion: z_i, the image's latents (Stable Diffusion's VAE, frozen),
                    beside z_t, the noised mask latents, and s, the self-conditioning estimate,
                    go into a UNet that predicts the noise eps (Eq. 1-2 of DDPM, scaled-linear
                    betas, T = 1000), the loss weighted min(SNR, 2) / SNR: train_loss.
Sec. 3.2            sampling: DDIM from z_T ~ N(0, I), self-conditioned on the last estimate of
                    z_0; g decodes, argmax over ids, unconfident pixels and small segments void.
Sec. 3.3, Alg. 3    mask inpainting: at each step the known part of z_t is replaced by the known
                    mask's latents noised to t: infer(known=..., known_region=...).

The model is class-agnostic, as the authors' release: every segment is one category.
Masks in and out are the project's long[B, h, w, 2] (class, identity); out, class 1 is "a segment".
The paper preset builds Stable Diffusion 1.4's classes (diffusers' AutoencoderKL and
UNet2DConditionModel: stable_diffusion.py); the tiny preset builds the same UNet class small.
"""
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bits import int2bit
from identities import majority_vote
from stable_diffusion import diffusers, strip_cross_attention, unet_config, vae_config, widen_conv_in

N_IDS = 127  # 7 bits name the segments 1..127; 0 is void


@dataclass
class LDMSegConfig:
    """The authors' release (512 px, SD 1.4's UNet with its cross-attention removed)."""
    model: str = "ldmseg"          # marks the checkpoint (a Pix2Seq-D config has no such field)
    image_size: int = 512
    mask_size: int = 512
    pad_value: float = 0.0         # letterbox grey (the release stretches images to a square instead)
    ae_widths: tuple = (32, 64, 128, 256)  # f_t's stages; a stride-2 conv between each: 1/8 of the side
    ae_groups: int = 32
    latent_channels: int = 4
    mask_scale: float = 0.18215    # mask latents x this before diffusion (the release: SD's image factor)
    fit_mask_scale: bool = False   # after stage 1, mask_scale = 1 / the std of the latents (SD's rule for its 0.18215)
    image_latents: str = "sd-vae"  # "sd-vae": SD's VAE encoder (frozen); "vae": the same class small, trained in
    #                                stage 1 beside the mask autoencoder; "pixels": space-to-depth, no encoder;
    #                                "pool": each latent cell's mean colour
    image_scale: float = 0.18215
    vae_widths: tuple = (128, 256, 512, 512)  # SD's image VAE (image_latents "sd-vae")
    vae_layers: int = 2
    unet_widths: tuple = (320, 640, 1280, 1280)
    unet_attention: tuple = (True, True, True, False)  # which UNet levels have transformer blocks
    unet_layers: int = 2
    unet_head_dim: int = 8
    unet_groups: int = 32
    T: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction: str = "epsilon"    # the UNet predicts eps ("epsilon", loss weighted min(SNR, max_snr) / SNR) or
    #                                z_0 itself ("sample", loss unweighted: every t counts the same, as Pix2Seq-D's)
    max_snr: float = 2.0
    self_cond: bool = True
    mask_th: float = 0.5           # pixels with max softmax probability under this become void
    overlap_th: float = 0.5        # a segment keeps at least this share of its own sigmoid(logit) >= mask_th pixels

    # what the project's samplers and writers read of a config
    n_classes = 1
    n_identity_bits = 7
    n_past = 0
    unconditional = False
    class_agnostic = True

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def paper_config(**overrides):
    return LDMSegConfig(**overrides)


def tiny_config(**overrides):
    """Sized for a CPU on the built-in shapes (64 px images, 32 px masks), with the choices a few CPU
    minutes need (docs/departures.md): f_t downsamples the mask 2x (one stage) to 16x16 latents; the
    image latents are the pixels themselves, 4x4 space-to-depth onto the same grid; a three-level
    UNet of the same class; no self-conditioning; mask latents scaled to unit std after stage 1."""
    c = dict(image_size=64, mask_size=32, ae_widths=(32, 64), image_latents="pixels", image_scale=1.0,
             unet_widths=(32, 64, 128), unet_attention=(False, False, True), unet_layers=1, unet_groups=16,
             self_cond=False, fit_mask_scale=True)
    c.update(overrides)
    return LDMSegConfig(**c)


PRESETS = {"tiny": tiny_config, "paper": paper_config}


# ---------------------------------------------------------------------------------------------
# The schedule (DDPM's scaled-linear betas, as Stable Diffusion's)

def alphas_cumprod(T=1000, beta_start=0.00085, beta_end=0.012):
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), betas = linspace(sqrt(start), sqrt(end), T)^2: float64[T]."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def snr_weight(alpha_bar, max_snr=2.0):
    """Min-SNR-gamma for eps prediction: min(SNR, gamma) / SNR, SNR = alpha_bar / (1 - alpha_bar).
    It is 1 where SNR <= gamma (large t) and gamma / SNR below (small t: down-weighted)."""
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=max_snr) / snr


def ddim_timesteps(steps, T=1000):
    """The release's DDIM times: T/steps apart, offset T/steps - 1 (50 steps: 999, 979, ..., 19)."""
    r = T // steps
    return list(range(T - 1, -1, -r))[:steps] if r * steps == T else [int(x) for x in
                                                                     torch.linspace(T - 1, 0, steps).round()]


# ---------------------------------------------------------------------------------------------
# Stage 1: the mask autoencoder

def remap_ids(ids, generator=None):
    """ids: long[B, h, w] (0 void, segments 1..K)  ->  each image's segments renamed to distinct
    ids drawn at random from 1..127 (the release's per-sample remapping). ValueError past 127."""
    K = int(ids.max()) if ids.numel() else 0
    if K > N_IDS:
        raise ValueError(f"a mask has segment ids up to {K}: the latent route names at most {N_IDS} segments "
                         f"(7 bits); drop the smallest segments first")
    names = torch.rand(ids.shape[0], N_IDS, generator=generator).argsort(1)[:, :K].to(ids.device) + 1
    return torch.cat([torch.zeros_like(names[:, :1]), names], 1).gather(1, ids.flatten(1)).view_as(ids)


def segment_ids(masks):
    """The project's masks long[B, h, w, 2] -> segment ids long[B, h, w] (0 where class or identity
    is 0); the identities of a mask already name its segments."""
    return torch.where(masks[..., 0] > 0, masks[..., 1], 0)


def id_bits(ids):
    """ids long[B, h, w] in 0..127 -> float[B, 7, h, w]: each bit as -1 / +1, void pixels 0."""
    b = int2bit(ids, 7).permute(0, 3, 1, 2).float() * 2 - 1
    return b * (ids > 0)[:, None]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel (the decoder g's norm)."""

    def __init__(self, c):
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def mask_encoder(widths, groups, latents):
    """f_t: bits float[B, 7, h, w] -> mean and log-variance float[B, 2 latents, h / 2^k, w / 2^k]."""
    layers = [nn.Conv2d(7, widths[0], 3, padding=1), nn.SiLU()]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Conv2d(a, a, 3, padding=1), nn.Conv2d(a, b, 3, stride=2, padding=1), nn.SiLU()]
    c = widths[-1]
    return nn.Sequential(*layers, nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c, eps=1e-6), nn.SiLU(),
                         nn.Conv2d(c, 2 * latents, 3, padding=1))


def mask_decoder(widths, groups, latents):
    """g: latents float[B, 4, h', w'] -> id logits float[B, 128, h / 2, w / 2] (upsampled x2 after)."""
    c = widths[-1]
    layers = [nn.Conv2d(latents, c, 3, padding=1)]
    for _ in range(len(widths) - 2):
        layers += [nn.ConvTranspose2d(c, c, 2, stride=2), LayerNorm2d(c), nn.SiLU()]
    return nn.Sequential(*layers, nn.GroupNorm(groups, c, eps=1e-6), nn.SiLU(), nn.Conv2d(c, N_IDS + 1, 3, padding=1))


def ae_loss(m_logits, ids):
    """Stage 1's loss: cross-entropy over the 128 ids, void ignored, + per segment (the logit of
    its own id) BCE + Dice, averaged over the segments. m_logits: float[B, 128, h, w]; ids: long[B, h, w]."""
    ce = F.cross_entropy(m_logits, ids, ignore_index=0) if (ids > 0).any() else m_logits.sum() * 0
    target = F.one_hot(ids, N_IDS + 1).permute(0, 3, 1, 2).float()
    present = target[:, 1:].flatten(2).amax(2) > 0  # [B, 127]: the segments of each image
    logit, target = m_logits[:, 1:].flatten(2)[present], target[:, 1:].flatten(2)[present]  # [n_seg, h w]
    if not len(logit):
        return ce, {"ce": ce.item(), "mask": 0.0}
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none").mean(1)
    p = logit.sigmoid()
    dice = 1 - (2 * (p * target).sum(1) + 1) / (p.sum(1) + target.sum(1) + 1)
    mask = (bce + dice).mean()
    return ce + mask, {"ce": ce.item(), "mask": mask.item()}


# ---------------------------------------------------------------------------------------------
# Stage 2: the latent diffusion model

class LDMSeg(nn.Module):
    """f_t, g (stage 1); f_i, the frozen image encoder, and the UNet (stage 2)."""

    def __init__(self, cfg: LDMSegConfig):
        super().__init__()
        self.cfg = c = cfg
        self.down = 2 ** (len(c.ae_widths) - 1)  # mask side / latent side
        if c.image_size * self.down % c.mask_size:
            raise ValueError(f"image_size {c.image_size} and mask_size {c.mask_size} do not give the image and "
                             f"mask latents one grid")
        self.f_t = mask_encoder(c.ae_widths, c.ae_groups, c.latent_channels)
        self.g = mask_decoder(c.ae_widths, c.ae_groups, c.latent_channels)
        self.image_down = c.image_size * self.down // c.mask_size  # image side / latent side
        dm = diffusers()
        if c.image_latents in ("sd-vae", "vae"):
            vae = dm.AutoencoderKL(**vae_config(c))
            self.f_i, z_i_channels = nn.Sequential(vae.encoder, vae.quant_conv), 4
            if c.image_latents == "vae":  # its decoder, for stage 1's reconstruction loss
                self.g_i = nn.Sequential(vae.post_quant_conv, vae.decoder)
        elif c.image_latents == "pixels":
            self.f_i, z_i_channels = nn.PixelUnshuffle(self.image_down), 3 * self.image_down ** 2
        elif c.image_latents == "pool":  # the mean colour of each cell: 3 channels, a VAE latent's budget
            self.f_i, z_i_channels = nn.AvgPool2d(self.image_down), 3
        else:
            raise ValueError(f"image_latents must be 'sd-vae', 'vae', 'pixels' or 'pool', got {c.image_latents!r}")
        self.unet = widen_conv_in(strip_cross_attention(dm.UNet2DConditionModel(**unet_config(c))),
                                  z_i_channels + (c.latent_channels if c.self_cond else 0))
        self.register_buffer("alpha_bar", alphas_cumprod(c.T, c.beta_start, c.beta_end), persistent=False)

    # stage 1 -----------------------------------------------------------------------------------
    def encode_mask(self, ids, sample=False):
        """ids long[B, h, w] -> z_0 float[B, 4, h / down, w / down], x mask_scale (sample: draw from
        f_t's Gaussian, as stage 1 trains; else its mean, as stage 2 and sampling use)."""
        mean, logvar = self.f_t(id_bits(ids)).chunk(2, 1)
        z = mean + (0.5 * logvar.clamp(-30, 20)).exp() * torch.randn_like(mean) if sample else mean
        return z * self.cfg.mask_scale

    def decode_mask(self, z):
        """z float[B, 4, h', w'] (scaled) -> id logits float[B, 128, h, w]."""
        out = self.g(z / self.cfg.mask_scale)
        return F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)

    def ae_loss(self, masks, images=None, generator=None):
        """Stage 1 on masks long[B, h, w, 2] -> (loss, stats); image_latents "vae": plus the image
        autoencoder's, mean squared error of the reconstruction (+ 1e-6 KL, as SD's VAE)."""
        ids = remap_ids(segment_ids(masks), generator)
        loss, stats = ae_loss(self.decode_mask(self.encode_mask(ids, sample=True)), ids)
        if self.cfg.image_latents == "vae":
            mean, logvar = self.f_i(images * 2 - 1).chunk(2, 1)
            logvar = logvar.clamp(-30, 20)
            x = self.g_i(mean + (0.5 * logvar).exp() * torch.randn_like(mean))
            kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean()
            image = F.mse_loss(x, images * 2 - 1) + 1e-6 * kl
            loss, stats = loss + image, {**stats, "image": image.item()}
        return loss, stats

    # stage 2 -----------------------------------------------------------------------------------
    def image_latents(self, images):
        """z_i: images float[B, 3, H, W] in [0, 1] -> float[B, c_i, H / image_down, W / image_down]
        (sd-vae, vae: the mean of the VAE's posterior) x image_scale."""
        z = self.f_i(images * 2 - 1)
        return (z[:, :4] if self.cfg.image_latents in ("sd-vae", "vae") else z) * self.cfg.image_scale

    def unet_out(self, z_t, z_i, t, s):
        """The UNet on [z_t | z_i | s] at integer times t long[B]: eps, or z_0 (cfg.prediction)."""
        x = torch.cat([z_t, z_i] + ([s] if self.cfg.self_cond else []), 1)
        return self.unet(x, t, encoder_hidden_states=None).sample

    def predict(self, z_t, z_i, t, s, a):
        """(eps, z_0) as the UNet estimates them; a: alpha_bar at t, float[B, 1, 1, 1] or 0-dim."""
        out = self.unet_out(z_t, z_i, t, s)
        if self.cfg.prediction == "sample":
            return (z_t - a.sqrt() * out) / (1 - a).sqrt(), out
        return out, self.x0_from_eps(z_t, out, a)

    def x0_from_eps(self, z_t, eps, a):
        return (z_t - (1 - a).sqrt() * eps) / a.sqrt()

    def train_loss(self, images, masks, t=None, eps=None, generator=None):
        """Stage 2 on images float[B, 3, H, W], masks long[B, h, w, 2] -> (loss, stats): eps-MSE at
        non-void latent cells, weighted min(SNR, 2) / SNR; self-conditioned (the release: always)
        on s, the z_0 its own first pass (zeros in place of s, no gradient) estimates."""
        ids = remap_ids(segment_ids(masks), generator)
        with torch.no_grad():
            z_0, z_i = self.encode_mask(ids), self.image_latents(images)
        B = z_0.shape[0]
        t = torch.randint(0, self.cfg.T, (B,), device=z_0.device) if t is None else t
        eps = torch.randn_like(z_0) if eps is None else eps
        a = self.alpha_bar[t].float().view(B, 1, 1, 1)
        z_t = a.sqrt() * z_0 + (1 - a).sqrt() * eps
        s = torch.zeros_like(z_0)
        if self.cfg.self_cond:
            with torch.no_grad():
                s = self.predict(z_t, z_i, t, s, a)[1]
        valid = F.interpolate((ids > 0)[:, None].float(), size=z_0.shape[-2:], mode="nearest")
        if self.cfg.prediction == "sample":
            loss = ((self.unet_out(z_t, z_i, t, s) - z_0) ** 2 * valid).mean()
        else:
            w = snr_weight(self.alpha_bar[t], self.cfg.max_snr).float().view(B, 1, 1, 1)
            loss = ((self.unet_out(z_t, z_i, t, s) - eps) ** 2 * valid * w).mean()
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def infer(self, images, steps=50, td=None, min_pixels=0, known=None, known_region=None, trajectory=False,
              vote=True, eta=0.0):
        """Sec. 3.2 (DDIM, the release's times) and, with known / known_region, Alg. 3. images:
        float[B, 3, H, W] -> long[B, h, w, 2] (class 1 where a segment is). td: Pix2Seq-D's, unused.
        known: long[B, h, w, 2], known_region: bool[B, h, w]: a latent cell all of whose pixels are
        known takes the known mask's latents noised to t before each step; the known pixels are
        copied into the answer. eta: 0 DDIM, 1 DDPM's ancestral steps."""
        z_i = self.image_latents(images)
        B, c = images.shape[0], self.cfg
        side = images.shape[-1] // self.image_down
        z_t = torch.randn(B, c.latent_channels, side, side, device=images.device)
        if known is not None:
            k_ids = segment_ids(known.to(images.device))
            if int(k_ids.max()) > N_IDS:
                raise ValueError(f"the known mask has segment ids up to {int(k_ids.max())}: the latent route "
                                 f"names at most {N_IDS} segments")
            region = known_region.to(images.device)
            z_known = self.encode_mask(torch.where(region, k_ids, 0))
            cell = -F.max_pool2d(-region[:, None].float(), self.down) > 0  # [B, 1, side, side]: fully known
        s, path = torch.zeros_like(z_t), []
        times = ddim_timesteps(steps, c.T)
        for k, t in enumerate(times):
            a = self.alpha_bar[t].float()
            a_next = self.alpha_bar[times[k + 1]].float() if k + 1 < len(times) else None
            if known is not None:
                z_t = torch.where(cell, a.sqrt() * z_known + (1 - a).sqrt() * torch.randn_like(z_t), z_t)
            eps, s = self.predict(z_t, z_i, torch.full((B,), t, device=z_t.device), s, a)
            if a_next is not None:
                var = eta ** 2 * (1 - a_next) / (1 - a) * (1 - a / a_next)
                z_t = a_next.sqrt() * s + (1 - a_next - var).sqrt() * eps + var.sqrt() * torch.randn_like(z_t)
            if trajectory:
                path.append(self.decode_ids(self.decode_mask(s), min_pixels))
        masks = self.decode_ids(self.decode_mask(s), min_pixels if vote else 0, vote)
        if known is not None:
            masks = torch.where(region[..., None], torch.stack([(k_ids > 0).long(), k_ids], -1), masks)
        return (masks, path) if trajectory else masks

    def decode_ids(self, m_logits, min_pixels=0, vote=True):
        """Post-processing of the release: argmax over the ids; pixels whose softmax maximum is under
        mask_th void; a segment with less than overlap_th of its sigmoid(logit) >= mask_th pixels
        void; then (vote) segments under min_pixels void. -> long[B, h, w, 2]."""
        c = self.cfg
        conf, ids = m_logits.softmax(1).max(1)
        ids = torch.where(conf < c.mask_th, 0, ids)
        own = F.one_hot(ids, N_IDS + 1).sum((1, 2)).float()  # [B, 128] argmax pixels per id
        wide = (m_logits.sigmoid() >= c.mask_th).sum((2, 3)).float()
        keep = own >= c.overlap_th * wide
        ids = torch.where(keep.gather(1, ids.flatten(1)).view_as(ids), ids, 0)
        masks = torch.stack([(ids > 0).long(), ids], -1)
        return majority_vote(masks, 1, min_pixels) if vote else masks
