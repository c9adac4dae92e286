"""Streaming video panoptic segmentation (Sec. 3.4, Fig. 5): Alg. 2 frame by frame, each frame
conditioned on the masks predicted for the frames before it.

The video model is the image model with n_past = 2: the mask decoder also reads the masks of
frames t-2 and t-1 as clean analog bits (Pix2SeqD.past_bits; zeros when absent), so it models
p(m_t | x_t, m_t-1, m_t-2). Identities persist because the model learns to copy them from the
past masks: there is no matching step. The first frame (a cold start) gets more sampling steps
than the rest (paper: 32 and 8, Fig. 7).
"""
import torch

STEPS_FIRST, STEPS_REST = 32, 8  # the paper's DAVIS inference (Sec. 4, Fig. 7)


def video_inputs(model, frames, masks, keep):
    """A batch of training windows (data.ShapesVideoDataset): frames float[B, n_past + 1, 3, S, S],
    masks long[B, n_past + 1, h, w, 2], keep bool[B, n_past] -> (images float[B, 3, S, S] and
    masks long[B, h, w, 2] of the last frame, past float[B, n_past * n_bits, h, w] from the gt
    masks before it)."""
    return frames[:, -1], masks[:, -1], model.past_bits(masks[:, :-1], keep)


@torch.no_grad()
def stream(model, frames, steps_first=STEPS_FIRST, steps_rest=STEPS_REST, td=2.0, min_pixels=4, feedback=True,
           eta=0.0):
    """Streaming inference. frames: float[B, T, 3, S, S] in [0, 1] -> masks long[B, T, h, w, 2].

    Frame 0 starts cold (past masks absent: zeros) with steps_first steps; frame k >= 1 reads
    the predicted masks of frames k-2 and k-1 (after majority vote) with steps_rest steps. An
    image model (n_past = 0), or feedback=False, segments every frame on its own, each a cold
    start (past absent) with steps_first: the per-frame baselines. eta: the sampler's (Pix2SeqD.infer)."""
    B, T = frames.shape[:2]
    n, h = model.cfg.n_past, model.cfg.mask_size
    fed = n and feedback
    prev = torch.zeros(B, n, h, h, 2, dtype=torch.long, device=frames.device)
    keep = torch.zeros(B, n, dtype=torch.bool, device=frames.device)
    out = []
    for k in range(T):
        past = model.past_bits(prev, keep) if n else None
        out.append(model.infer(frames[:, k], steps_rest if fed and k else steps_first, td, min_pixels, past=past,
                               eta=eta))
        if fed:
            prev = torch.cat([prev[:, 1:], out[-1][:, None]], 1)
            keep = torch.cat([keep[:, 1:], torch.ones_like(keep[:, :1])], 1)
    return torch.stack(out, 1)
