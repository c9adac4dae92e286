"""Run the tests from any folder: the repo root on sys.path; Triton's interpreter on the CPU
(it must be set before any kernel module is imported, see ../shared/KERNELS.md)."""
import os
import sys

import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(min(2, torch.get_num_threads()))
