"""Reproducible batching for Alg. 1's training loop: every random draw of training is a pure
function of (seed, step, position in the global batch), so --resume needs no RNG state and N
processes (torchrun) compute what one does.

step_draws()  which examples a step's batch holds, and the seed of each one's data draw
Draws         a data set read with those seeds (augmentation and identity permutation included)
batch_at()    the batch of a step; noise_at() its diffusion times t and noise eps (Eq. 1)
              (and self-conditioning's coin)
"""
import functools

import numpy as np
import torch


def draw_seeds(seed, step, position):
    """Two 64-bit seeds for the example at a position of a step's global batch: its data draw, its noise."""
    return np.random.SeedSequence([seed, step, position]).generate_state(2, np.uint64).tolist()


@functools.lru_cache(maxsize=2)
def epoch_order(n, seed, epoch):
    """The data set's order in an epoch: a fresh permutation per epoch, as DistributedSampler's."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()


def step_draws(n, step, batch_size, seed, rank=0, world=1):
    """This process's share of the global batch of a step: [(index, draw seed)] for the positions
    rank, rank + world, ... (DistributedSampler's split). The batches walk through the epochs'
    orders back to back, so a step's batch is a pure function of (seed, step): unlike
    DistributedSampler, whose state is the epoch, this starts exactly at any step (--resume)."""
    draws = []
    for p in range(rank, batch_size, world):
        epoch, k = divmod(step * batch_size + p, n)
        draws.append((epoch_order(n, seed, epoch)[k], draw_seeds(seed, step, p)[0]))
    return draws


class Draws(torch.utils.data.Dataset):
    """draws[(i, s)] = dataset[i] drawn with torch's CPU RNG seeded with s (in whichever process)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, draw):
        torch.default_generator.manual_seed(draw[1])
        return self.dataset[draw[0]]


class StepBatches(torch.utils.data.Sampler):
    """DataLoader batch sampler: step_draws of the steps start..stop-1."""

    def __init__(self, n, start, stop, batch_size, seed, rank=0, world=1):
        self.n, self.start, self.stop, self.batch_size, self.seed, self.rank, self.world = \
            n, start, stop, batch_size, seed, rank, world

    def __len__(self):
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield step_draws(self.n, step, self.batch_size, self.seed, self.rank, self.world)


def batch_at(dataset, step, batch_size, seed, device, rank=0, world=1):
    """The training batch of a step (this process's share): (images, masks) on device."""
    draws = Draws(dataset)
    batch = [draws[d] for d in step_draws(len(dataset), step, batch_size, seed, rank, world)]
    images, masks = torch.utils.data.default_collate(batch)
    return images.to(device), masks.to(device)


def noise_at(step, batch_size, seed, cfg, device, rank=0, world=1):
    """Diffusion time t: float[b], noise eps: float[b, n_bits, h, w] and self-conditioning's coin
    u: float[b] of this process's examples, each drawn from its own generator, so they do not
    depend on how the batch is split."""
    t, eps, u = [], [], []
    for p in range(rank, batch_size, world):
        g = torch.Generator(device).manual_seed(draw_seeds(seed, step, p)[1])
        t.append(torch.rand(1, generator=g, device=device))
        eps.append(torch.randn(cfg.n_bits, cfg.mask_size, cfg.mask_size, generator=g, device=device))
        u.append(torch.rand(1, generator=g, device=device))
    return torch.cat(t), torch.stack(eps), torch.cat(u)
