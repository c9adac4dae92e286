"""Command-line plumbing shared by the scripts (train.py, sample.py, video.py, ablations.py,
convert.py): bad input ends in one line on stderr and exit status 2, never a traceback; the
devices and kernels flags; --set FIELD=VALUE for diffusion.Config's fields."""
import argparse
import copy
import math
import os
import sys

import torch

import kernels
from diffusion import Config


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows each flag's default (none for flags off by default or without one), and the
    description's lines as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS, [], ()) \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"

    def _expand_help(self, action):
        """A list default as a user types it: "1,2,5" for a comma-separated flag, "1 3" for nargs."""
        if isinstance(action.default, (tuple, list)) and action.default:
            sep = " " if action.nargs not in (None, "?") else ","
            action = copy.copy(action)
            action.default = sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in action.default)
        return super()._expand_help(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the usage too), and every float flag
    finite: nan or inf would otherwise run to the end and give a NaN model or empty masks."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        kernels.check_torch()
        for action in self._actions:
            value = getattr(ns, action.dest, None)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    flag = action.option_strings[-1] if action.option_strings else action.dest
                    self.error(f"{flag} must be a finite number, got {v}")
        return ns


def number_list(kind):
    """An argparse type: "1,2,5" -> (1, 2, 5) of kind (int or float), all finite; empty items skipped."""
    def parse(text):
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}s") from None
        if not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be a finite number")
        return values
    return parse


def at_least(ap, args, low, *flags):
    """ap.error naming the first flag (attribute names, e.g. "batch_size") whose value, or any
    value of its list, is below low; flags left at None are not checked."""
    for flag in flags:
        value = getattr(args, flag)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and v < low:
                ap.error(f"--{flag.replace('_', '-')} must be >= {low:g}, got {v:g}")


def check_eta(ap, eta):
    """ap.error unless --eta is a sampler's eta (diffusion.ddim_step): 0 DDIM, 1 DDPM, or between."""
    if not 0 <= eta <= 1:
        ap.error(f"--eta must be in [0, 1] (0: DDIM, 1: DDPM), got {eta:g}")


def plural(n, word):
    """'1 segment', '3 segments'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def add_device_flags(ap):
    """--device and --kernels, with one meaning in every script."""
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--kernels", choices=["auto", "on", "off"], default="auto",
                    help="the Triton kernels (kernels/): auto = on CUDA tensors when Triton is installed, "
                    "on = always (on the CPU through Triton's interpreter), off = the PyTorch references")


def check_device(ap, device, kernels_flag="auto"):
    """ap.error unless --device names a usable cpu or cuda device and --kernels can run; then
    sets PIX2SEQD_KERNELS for --kernels on/off (kernels.enabled reads it)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        ap.error(f"--device {device}: not a device name; use cpu, cuda or cuda:N")
    if kind not in ("cpu", "cuda"):
        ap.error(f"--device {device}: this project runs on cpu or cuda (Triton kernels need CUDA); use --device cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {device}: no CUDA device here; use --device cpu")
    if kernels_flag == "on" and kernels.triton_problem():
        ap.error(f"--kernels on: {kernels.triton_problem()}; or use --kernels auto")
    if kernels_flag == "on" and kind == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("--kernels on with --device cpu runs the Triton kernels in Triton's interpreter (slow, for "
                 "tests): start with TRITON_INTERPRET=1 in the environment, or use --device cuda")
    if kernels_flag != "auto":
        os.environ["PIX2SEQD_KERNELS"] = "1" if kernels_flag == "on" else "0"


def cpu_has_bf16():
    """Whether this CPU runs bf16 matmuls and convolutions natively (AVX512-BF16 or AMX, through oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_amp(ap, args):
    """ap.error for --amp (bf16 autocast) on a CPU without native bf16, where it would run slower."""
    if getattr(args, "amp", False) and torch.device(args.device).type == "cpu" and not cpu_has_bf16():
        ap.error("--amp: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 autocast runs slower "
                 "than float32; drop --amp")


def make_dir(prog, path, flag="--out"):
    """os.makedirs(path, exist_ok=True), or one line naming the flag when path cannot be that folder."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        existing = os.path.abspath(path)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        why = f"{existing} is a file" if os.path.isfile(existing) else e.strerror
        fail(prog, f"{flag} {path}: cannot create this folder ({why}); give a folder you can write to")


def fail(prog, message):
    """Print `prog: error: message` as one line (white space folded) and exit with status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def parse_fields(items, defaults=None):
    """Config fields given as text, as the scripts' --set takes them: ["enc_layers=2",
    "dec_mults=1,1,2,2"] -> {"enc_layers": 2, "dec_mults": (1, 1, 2, 2)}, fields of defaults (a
    config dataclass; diffusion.Config if None). ValueError (one line) for an unknown field or a
    value of the wrong type."""
    defaults = Config() if defaults is None else defaults
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not hasattr(defaults, key) or key in ("arch", "model") or not value:
            raise ValueError(f"--set {item}: give FIELD=VALUE with a field of {type(defaults).__module__}."
                             f"{type(defaults).__name__}")
        default = getattr(defaults, key)
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        read = (lambda v: {"true": True, "false": False}[v.lower()]) if kind is bool else kind
        try:
            out[key] = tuple(map(read, value.split(","))) if isinstance(default, tuple) else read(value)
        except (ValueError, KeyError):
            noun = {bool: "true/false"}.get(kind, kind.__name__)
            what = (f"a list of {noun}" + ("s" if kind is not bool else "") if isinstance(default, tuple) else
                    noun if kind is bool else ("an " if kind is int else "a ") + noun)
            raise ValueError(f"--set {item}: {value!r} is not {what}") from None
    return out
