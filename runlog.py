"""A training run's record in its folder, runs/<name>/: log.jsonl (one JSON row per logged step,
then the evaluation's row), locked while the run trains; with --tensorboard the same numbers as
TensorBoard scalars beside it (events.out.tfevents.*; `tensorboard --logdir runs`); summary.png,
the loss curve and held-out samples, also shown in TensorBoard's images."""
import json
import os

import numpy as np
from PIL import Image

import cli

try:
    import fcntl  # Unix: the run's log is locked while it trains
except ImportError:  # Windows: no lock
    fcntl = None

SCALARS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm", "step_time": "train/step_time_s",
           "pq": "eval/PQ", "pq_things": "eval/PQ_things", "pq_stuff": "eval/PQ_stuff", "j_and_f": "eval/J&F",
           "identity": "eval/identity_consistency"}


class RunLog:
    """run_dir/log.jsonl for appending (emptied unless resume), locked for the whole run: a second
    train.py on the same run folder stops with one line instead of truncating this run's log."""

    def __init__(self, run_dir, resume, tensorboard=False):
        self.path = os.path.join(run_dir, "log.jsonl")
        self.file = open(self.path, "a")
        try:
            if fcntl is not None:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until close() or the process's exit
        except OSError:
            self.file.close()
            cli.fail("train.py", f"{run_dir} is in use by another train.py run; give this run another --name (or --out)")
        if not resume:
            self.file.truncate(0)
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
