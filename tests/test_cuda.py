"""The CUDA paths, for a session with a GPU: `TRITON_INTERPRET=0 pytest tests/test_cuda.py` (skipped
on the CPU). The model with its Triton kernels (the default on CUDA) computes the same loss and
gradients as with the PyTorch references; train.py runs on CUDA with --amp and with --compile.
torchrun with nccl needs two GPUs: `torchrun --nproc_per_node=2 train.py --device cuda ...`."""
import os

import pytest
import torch

import train
from batching import batch_at, noise_at
from data import ShapesDataset
from diffusion import Pix2SeqD, tiny_config

pytestmark = [pytest.mark.triton, pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs a GPU and compiled kernels (TRITON_INTERPRET=0)")]


def loss_and_grads(model, kernels, monkeypatch):
    monkeypatch.setenv("PIX2SEQD_KERNELS", kernels)
    images, masks = batch_at(ShapesDataset("train"), 0, 8, seed=0, device="cuda")
    t, eps, _ = noise_at(0, 8, 0, model.cfg, "cuda")
    model.zero_grad()
    loss, _ = model.train_loss(images, masks, t=t, eps=eps)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_kernels_and_references_give_one_loss_and_gradient(monkeypatch):
    torch.manual_seed(0)
    model = Pix2SeqD(tiny_config()).cuda()
    ref_loss, ref_grads = loss_and_grads(model, "0", monkeypatch)
    loss, grads = loss_and_grads(model, "auto", monkeypatch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("flag", ["--amp", "--compile"])
def test_train_runs_on_cuda(tmp_path, flag):
    result = train.main(["--device", "cuda", flag, "--out", str(tmp_path), "--train-steps", "3", "--batch-size", "4",
                         "--warmup", "1", "--eval-images", "4", "--steps", "2"])
    assert 0 <= result["pq"] <= 1
