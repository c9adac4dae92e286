"""Stable Diffusion 1.4's parts as LDMSeg uses them (its Sec. 3.1), built with diffusers' classes:
the VAE's encoder gives the image latents z_i, and the UNet, its cross-attention removed and its
first convolution widened for z_i and s, denoises the mask latents. The paper preset loads SD's
weights into them (load_stable_diffusion); the tiny preset builds the same UNet class small.
"""
import types
import warnings

import torch
import torch.nn as nn

SD = "CompVis/stable-diffusion-v1-4"


def diffusers():
    """diffusers' two classes used here, as dm.AutoencoderKL and dm.UNet2DConditionModel, or a one-line
    ImportError saying how to get the package. (Importing them pulls in tqdm.auto, which in a notebook
    without ipywidgets warns about its progress bars: silenced, no bar is drawn by them here.)"""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from diffusers import AutoencoderKL, UNet2DConditionModel
    except ImportError:
        raise ImportError("LDMSeg builds Stable Diffusion's UNet and VAE with diffusers, which is not installed: "
                          "pip install diffusers") from None
    return types.SimpleNamespace(AutoencoderKL=AutoencoderKL, UNet2DConditionModel=UNet2DConditionModel)


def strip_cross_attention(unet):
    """The release's UNet: SD's with every transformer block's cross-attention (attn2, norm2)
    removed, so its blocks self-attend and run their MLP only; no text is read."""
    for m in unet.modules():
        if hasattr(m, "attn2"):
            m.attn2, m.norm2 = None, None
    return unet


def widen_conv_in(unet, extra):
    """conv_in reads `extra` more channels (z_i and s beside z_t), their weights zero: the
    pre-trained UNet's output is unchanged at the start."""
    old = unet.conv_in
    new = nn.Conv2d(old.in_channels + extra, old.out_channels, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    return unet


def unet_config(cfg):
    """diffusers' UNet2DConditionModel arguments: SD 1.4's for the paper preset (4 channels in,
    cross_attention_dim 768, so that its weights load), before strip_cross_attention / widen_conv_in."""
    attn = cfg.unet_attention
    return dict(sample_size=cfg.mask_size // 2 ** (len(cfg.ae_widths) - 1), in_channels=cfg.latent_channels,
                out_channels=cfg.latent_channels, block_out_channels=cfg.unet_widths, layers_per_block=cfg.unet_layers,
                down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
                attention_head_dim=cfg.unet_head_dim, norm_num_groups=cfg.unet_groups, cross_attention_dim=768)


def vae_config(cfg):
    """diffusers' AutoencoderKL arguments (SD 1.4's VAE for the paper preset)."""
    n = len(cfg.vae_widths)
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=cfg.vae_widths,
                layers_per_block=cfg.vae_layers, down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n, norm_num_groups=32, sample_size=cfg.image_size)


def load_stable_diffusion(model, source=None):
    """The paper preset's start, as the release's: Stable Diffusion 1.4's VAE encoder and UNet
    (source: a Hugging Face name, default SD, or a local folder with vae/ and unet/), the UNet's
    cross-attention removed, conv_in's mask-latent channels SD's, z_i's and s's zero. -> a line."""
    dm, source = diffusers(), source or SD
    vae = dm.AutoencoderKL.from_pretrained(source, subfolder="vae", low_cpu_mem_usage=False)
    unet = strip_cross_attention(dm.UNet2DConditionModel.from_pretrained(source, subfolder="unet",
                                                                          low_cpu_mem_usage=False))
    weights = unet.state_dict()
    w = weights["conv_in.weight"]
    weights["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], model.unet.conv_in.in_channels - w.shape[1],
                                                           *w.shape[2:])], 1)
    try:
        model.f_i.load_state_dict(nn.Sequential(vae.encoder, vae.quant_conv).state_dict())
        model.unet.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{source}: its VAE or UNet is not the paper preset's ({str(e).splitlines()[1].strip()})") \
            from None
    return f"{source}: Stable Diffusion's image VAE encoder and UNet loaded (cross-attention removed)"
