"""Every command of the README's Quick start exits 0 as a user runs it: in a subprocess with the
environment a user has (none of the test suite's variables), shortened where the command allows
(fewer steps or images; outputs into a temporary folder instead of the repository)."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the flags that make each command quick, by its first two words (a Quick start line without an entry fails)
SHORT = {
    "python train.py": ["--train-steps", "2", "--eval-images", "2", "--steps", "1", "--out", "{tmp}"],
    "python sample.py": ["--steps", "2", "--n", "2", "--sweep-steps", "1", "--sweep-td", "2", "--out", "{tmp}"],
    "python video.py": ["--steps-first", "2", "--steps-rest", "1", "--out", "{tmp}"],
    "python ablations.py": ["--values", "0.1", "--train-steps", "2", "--eval-images", "2", "--steps", "1",
                            "--out", "{tmp}"],
    "python -m": [],
}


def quick_start():
    with open(os.path.join(ROOT, "README.md")) as f:
        block = re.search(r"## Quick start\n\n```\n(.*?)```", f.read(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_quick_start_is_what_this_test_runs():
    assert len(quick_start()) >= 6 and all(" ".join(c.split()[:2]) in SHORT for c in quick_start())


@pytest.mark.parametrize("command", quick_start())
def test_a_quick_start_command_exits_0_as_a_user_runs_it(command, tmp_path):
    words = shlex.split(command)
    extra = SHORT[" ".join(words[:2])]
    if "--evaluate" not in words:  # (sample.py: --n and the sweeps go with --evaluate only)
        extra = [x for i, x in enumerate(extra) if x not in ("--n", "--sweep-steps", "--sweep-td")
                 and extra[i - 1] not in ("--n", "--sweep-steps", "--sweep-td")] if words[1] == "sample.py" else extra
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRITON_", "PIX2SEQD_")) and k != "PYTHONPATH"}
    args = [sys.executable] + words[1:] + [x.format(tmp=tmp_path) for x in extra]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (command, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr[-3000:]
