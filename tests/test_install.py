"""What a user's install decides: the version ranges of requirements.txt are the ones the code
checks, and without Triton (macOS, Windows) everything but the kernels runs, while every way of
asking for a kernel says why it cannot in one line."""
import os
import re
import subprocess
import sys

import pytest
import torch

import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_TRITON = os.path.join(ROOT, "tests", "no_triton")


def requirement(name):
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.strip() for line in f if re.match(rf"{name}\b", line)]
    assert len(lines) == 1, lines
    return lines[0]


def test_requirements_state_the_ranges_the_code_checks():
    assert requirement("torch").split(";")[0] == f"torch{kernels.range_text(kernels.TORCH_RANGE)}"
    spec, marker = requirement("triton").split(";")
    assert spec.strip() == f"triton{kernels.range_text(kernels.TRITON_RANGE)}"
    assert marker.strip() == 'platform_system == "Linux"'  # the only platform with triton wheels


@pytest.mark.parametrize("version, inside", [("2.11.0", True), ("2.13.0+cpu", True), ("2.15.1", True),
                                             ("2.10.2", False), ("2.16.0", False), ("3.0", False)])
def test_torch_range(version, inside):
    assert kernels.in_range(version, kernels.TORCH_RANGE) == inside


def test_torch_outside_the_range_notes_once_and_carries_on(monkeypatch, capsys):
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    monkeypatch.setattr(kernels, "_warned_torch", [])
    kernels.check_torch()
    kernels.check_torch()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2.10.0" in err and ">=2.11,<2.16" in err


def test_auto_falls_back_to_the_references_without_triton(monkeypatch):
    monkeypatch.setattr(kernels, "_problem", ["Triton is not installed"])
    monkeypatch.setenv("PIX2SEQD_KERNELS", "auto")
    x = torch.zeros(1)
    assert not kernels.enabled(x)
    monkeypatch.setenv("PIX2SEQD_KERNELS", "1")
    with pytest.raises(RuntimeError, match="not installed"):
        kernels.enabled(x)


def run(args, pythonpath, **kw):
    env = {**os.environ, "PYTHONPATH": pythonpath, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.mark.parametrize("args", [["train.py", "--kernels", "on"], ["-m", "kernels.bench"],
                                  ["-m", "exercises.check", "7"]], ids=["train", "bench", "exercise7"])
def test_asking_for_a_kernel_without_triton_is_one_line(args):
    r = run(args, NO_TRITON)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Triton is not installed" in r.stderr, r.stderr


def test_a_triton_outside_the_range_is_one_line(tmp_path):
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "__init__.py").write_text('__version__ = "3.5.0"\n')
    r = run(["train.py", "--kernels", "on"], str(tmp_path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Triton 3.5.0" in r.stderr and "triton>=3.6,<3.10" in r.stderr


def test_sample_runs_without_triton(tmp_path):
    r = run(["sample.py", os.path.join("examples", "shapes_val_0.png"), "--out", str(tmp_path), "--steps", "2"],
            NO_TRITON)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Triton" not in r.stderr and "Traceback" not in r.stderr
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())
