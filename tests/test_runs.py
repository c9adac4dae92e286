"""No run is lost or mixed: a folder holding a run is not overwritten unless asked, and Ctrl-C or a
scheduler's SIGTERM stops train.py with a checkpoint from which --resume continues bit for bit."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--train-steps", "30", "--batch-size", "2", "--eval-images", "2", "--steps", "1", "--warmup", "2",
         "--log-every", "1", "--accum", "2"]


def test_a_run_folder_is_not_overwritten_unless_asked(tmp_path, capsys):
    argv = ["--train-steps", "2", "--batch-size", "2", "--eval-images", "2", "--steps", "1", "--out", str(tmp_path),
            "--name", "r"]
    train.main(argv)
    first = torch.load(tmp_path / "r" / "ckpt.pt", weights_only=True)["model"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--seed", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "holds a run already" in err and "--resume" in err and "--name" in err and "\n" not in err
    assert torch.equal(torch.load(tmp_path / "r" / "ckpt.pt", weights_only=True)["model"]["decoder.conv_in.weight"],
                       first["decoder.conv_in.weight"])  # untouched
    train.main(argv + ["--seed", "1", "--overwrite"])
    with open(tmp_path / "r" / "log.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [0, 1, 2]  # the new run's rows alone


def wait_for_rows(log, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if os.path.isfile(log):
            with open(log) as f:
                if sum(1 for _ in f) >= n:
                    return
        time.sleep(0.2)
    raise AssertionError(f"the run wrote fewer than {n} log rows")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_saves_and_resumes_bit_for_bit(tmp_path, signum, status):
    argv = [*SHORT, "--out", str(tmp_path), "--name", "cut"]
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "cut" / "log.jsonl", 3, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped at step ") and last.endswith("--resume continues"), last
    done = torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=True)["step"]
    assert f"stopped at step {done} of 30" in last and 3 <= done < 30
    train.main([*argv, "--resume"])
    train.main([*SHORT, "--out", str(tmp_path), "--name", "whole"])
    resumed, whole = (torch.load(tmp_path / n / "ckpt.pt", weights_only=True) for n in ("cut", "whole"))
    for part in ("model", "ema"):
        assert all(torch.equal(whole[part][k], resumed[part][k]) for k in whole[part]), part
    with open(tmp_path / "cut" / "log.jsonl") as f:
        steps = [json.loads(line).get("step") for line in f]
    assert steps[:-1] == sorted(set(steps[:-1]))  # no step logged twice, none out of order


def test_the_stop_request_waits_for_the_step_and_a_second_signal_does_not():
    """Inside the steps a signal is a request the loop answers at the step's end; outside them
    (setting up, evaluating), or a second one, it stops at once."""
    from runlog import Stop, Stopped
    with Stop() as stop:
        with pytest.raises(Stopped):
            signal.raise_signal(signal.SIGTERM)  # not stepping: at once
        stop.stepping = True
        signal.raise_signal(signal.SIGINT)
        assert stop.requested() == signal.SIGINT
        with pytest.raises(Stopped) as e:
            signal.raise_signal(signal.SIGINT)  # the second Ctrl-C
        assert e.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_killed_run_resumes_without_logging_a_step_twice(tmp_path):
    """A hard kill (SIGKILL, a lost node) leaves rows in the log past the last checkpoint, and maybe
    half a row: --resume goes back to the checkpoint and drops them instead of repeating the steps."""
    argv = [*SHORT, "--out", str(tmp_path), "--name", "k"]
    train.main([*argv, "--stop-at", "4"])  # the checkpoint at step 4, rows of steps 0-3
    with open(tmp_path / "k" / "log.jsonl", "a") as f:  # what a run killed at step 7 leaves after them
        f.writelines(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (4, 5, 6))
        f.write('{"step": 7, "lo')
    train.main([*argv, "--resume"])
    with open(tmp_path / "k" / "log.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == list(range(30)) + [30]
