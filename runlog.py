"""A training run's record in its folder, runs/<name>/: log.jsonl (one JSON row per logged step,
then the evaluation's row), locked while the run trains; with --tensorboard the same numbers as
TensorBoard scalars beside it (events.out.tfevents.*; `tensorboard --logdir runs`); summary.png,
the loss curve and held-out samples, also shown in TensorBoard's images. And what keeps a run from
being lost: a folder that holds a run is not overwritten unless asked (`claim`), and Ctrl-C or a
scheduler's SIGTERM stops the run at the end of its current step, with a checkpoint (`Stop`)."""
import glob
import json
import os
import signal

import numpy as np
from PIL import Image

import cli

try:
    import fcntl  # Unix: the run's log is locked while it trains
except ImportError:  # Windows: no lock
    fcntl = None

def lock(f):
    """Locks the open file f for this process (until it is closed): False if another process holds
    it, as a live run holds its log. Without fcntl (Windows) nothing is locked."""
    try:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def busy(run_dir):
    return f"{run_dir} is in use by another train.py run; give this run another --name (or --out)"


def logged_step(line):
    """The step of one log.jsonl row, or None for a line that is not a whole row (a killed write)."""
    try:
        return json.loads(line).get("step")
    except ValueError:
        return None


SCALARS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "step_time": "train/step_time_s",
           "pq": "eval/PQ", "pq_things": "eval/PQ_things", "pq_stuff": "eval/PQ_stuff", "j_and_f": "eval/J&F",
           "identity": "eval/identity_consistency"}


class RunLog:
    """run_dir/log.jsonl for appending, locked for the whole run: a second train.py on the same run
    folder stops with one line instead of truncating this run's log. A new run empties it; a run
    resumed at step `start` keeps the rows of the steps before it and drops those a stopped run
    logged after its last checkpoint, so each step is in the log once, in order."""

    def __init__(self, run_dir, resume, tensorboard=False, start=0):
        self.path = os.path.join(run_dir, "log.jsonl")
        self.file = open(self.path, "a")
        if not lock(self.file):  # held until close() or the process's exit
            self.file.close()
            cli.fail("train.py", busy(run_dir))
        with open(self.path) as f:
            steps = [(line, logged_step(line)) for line in f] if resume else []
        kept = [line for line, step in steps if step is not None and step < start]
        self.file.truncate(0)
        self.file.writelines(kept)
        self.file.flush()
        self.board = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                cli.fail("train.py", "--tensorboard needs the tensorboard package: pip install tensorboard")
            self.board = SummaryWriter(run_dir)

    def write(self, row):
        """One row: {"step": .., "loss": .., ...} (values in [0, 1] for PQ) -> log.jsonl, and the
        numbers of SCALARS to TensorBoard at row["step"]."""
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, tag in SCALARS.items():
                if key in row:
                    self.board.add_scalar(tag, row[key], row["step"])
            self.board.flush()

    def rows(self):
        """The training rows written so far (for the loss curve)."""
        with open(self.path) as f:
            return [r for r in map(json.loads, f) if "loss" in r]

    def figure(self, path, step):
        """summary.png, written: into TensorBoard's images too."""
        if self.board is not None:
            self.board.add_image("summary", np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")
            self.board.flush()

    def close(self):
        if self.board is not None:
            self.board.close()
        self.file.close()


RECORD = ("ckpt.pt", "log.jsonl", "summary.png", "samples.png", "events.out.tfevents.*")  # what a run writes


def claim(run_dir, resume, overwrite):
    """Before a run starts in run_dir: None if it may (a new folder, --resume, or --overwrite, which
    deletes the old run's record first), else the one-line reason it may not."""
    found = [p for pattern in RECORD for p in glob.glob(os.path.join(run_dir, pattern))]
    if os.path.isfile(os.path.join(run_dir, "log.jsonl")):
        with open(os.path.join(run_dir, "log.jsonl")) as f:  # a live run holds its log locked
            if not lock(f):
                return busy(run_dir)
    if resume or not found:
        return None
    if overwrite:
        for path in found:
            os.remove(path)
        return None
    return (f"{run_dir} holds a run already ({', '.join(sorted(os.path.basename(p) for p in found)[:3])}): "
            f"--resume continues it, --name NAME starts this one in another folder, --overwrite replaces it")


class Stopped(Exception):
    """A stop signal arrived outside the training steps (setting up, or evaluating)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stop:
    """SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends before it kills a job), while
    the run is in its with-block: inside the training steps (`stepping` True) a request, which the
    loop answers at the end of the step with a checkpoint; elsewhere, or a second signal, Stopped
    at once. Exit status 128 + the signal's number (130, 143), as a shell reports it."""

    def __init__(self):
        self.signum, self.stepping, self.saved = None, False, {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self.saved[s] = signal.signal(s, self.handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.saved.items():
            signal.signal(s, handler)

    def handle(self, signum, frame):
        if not self.stepping or self.signum is not None:
            raise Stopped(signum)
        self.signum = signum

    def requested(self, world=1, device="cpu"):
        """The signal to stop on, agreed by all processes (any one's), or None."""
        if world == 1:
            return self.signum
        import torch
        import torch.distributed as dist
        flag = torch.tensor(float(self.signum or 0), device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None
