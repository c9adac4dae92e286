"""Run the tests from any folder: the repo root on sys.path; Triton's interpreter on the CPU
(it must be set before any kernel module is imported).

Tests marked `triton` need a supported Triton; without one they are skipped with the reason
(`python -m pytest -m triton` runs just them, e.g. under another Triton release)."""
import os
import sys

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(min(2, torch.get_num_threads()))

import kernels  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "triton: needs Triton (the kernels, exercise 7); skipped without it")


def pytest_collection_modifyitems(config, items):
    problem = kernels.triton_problem()
    if problem:
        skip = pytest.mark.skip(reason=problem)
        for item in items:
            if "triton" in item.keywords:
                item.add_marker(skip)
