"""The checker of the classroom exercises. From the repo root:

    python -m exercises.check N               checks exercises/NN_*.py, your work
    python -m exercises.check N --file PATH   checks another file (a solution, a variant)

It loads the file, runs property tests against the project's reference (exercises/properties.py,
exercises/properties_pq.py) and prints either one "ok" line per check and a cheerful verdict, or
the first failure in plain words: the call, what was expected, what came out, and a hint. Exit code 0 when every check
passes, 1 when one fails or the function is not written yet, 2 for a bad command line.
Exercise 7 (Triton) runs in Triton's interpreter when there is no CUDA.
"""
import argparse
import importlib.util
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first `import triton` (exercise 7)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repo root: `from bits import int2bit`

import kernels  # noqa: E402
from exercises import properties, properties_pq  # noqa: E402
from exercises.harness import NotWritten, Wrong  # noqa: E402

# N: (file, title, functions the student writes, check)
EXERCISES = {
    1: ("01_bits.py", "integers as bits (Sec. 2, App. A Alg. 3)", ("int2bit", "bit2int"), properties.check_bits),
    2: ("02_schedule.py", "the noise schedule and the time steps (Eq. 1, Alg. 2, Alg. 4)", ("gamma", "time_pairs"),
        properties.check_schedule),
    3: ("03_ddim_step.py", "the DDIM step (Sec. 3.3, App. A Alg. 4)", ("ddim_step",), properties.check_ddim),
    4: ("04_size_weights.py", "loss weighting by segment size (Sec. 3.2)", ("size_weights",),
        properties.check_size_weights),
    5: ("05_expected_bits.py", "analog bits from softmax logits (Sec. 3.2)", ("expected_bits",),
        properties.check_expected_bits),
    6: ("06_pq_matching.py", "panoptic quality: matching segments (Sec. 4.2, Table 1; the COCO rules)",
        ("match_segments",), properties_pq.check_pq),
    7: ("07_triton_ddim.py", "the DDIM step as a Triton kernel (App. A Alg. 4)", ("ddim_step_kernel",),
        properties.check_triton_ddim),
}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"exercises.check: {message} (usage: python -m exercises.check N [--file PATH], "
                     f"N in 1..{len(EXERCISES)})\n")


def load(path, n):
    """The student's file as a module (registered in sys.modules, as Triton's JIT expects)."""
    name = f"exercise_{n:02d}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    parser = Parser(prog="python -m exercises.check", description="Check an exercise against the reference.")
    parser.add_argument("n", type=int, help=f"the exercise number, 1..{len(EXERCISES)}")
    parser.add_argument("--file", help="the file to check (default: exercises/NN_name.py)")
    args = parser.parse_args(argv)
    if args.n not in EXERCISES:
        parser.error(f"there is no exercise {args.n}")
    if args.n == 7 and kernels.triton_problem():
        parser.error(f"exercise 7 writes a Triton kernel: {kernels.triton_problem()}")
    file, title, names, check = EXERCISES[args.n]
    path = args.file or os.path.join(HERE, file)
    if os.path.isdir(path):
        parser.error(f"{path} is a folder: give the .py file")
    if not os.path.isfile(path):
        parser.error(f"{path} does not exist")
    if not path.endswith(".py"):
        parser.error(f"{path} is not a Python file: give the .py file with your solution")
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    print(f"exercise {args.n}: {title}, checking {shown}")
    try:
        mod = load(path, args.n)
    except SystemExit as e:
        print(f"NOT YET: {shown} does not load: it exits as it is imported (SystemExit: {e.code!r})\n"
              f"  hint:     remove the sys.exit() / exit() call (or put it under if __name__ == \"__main__\":), "
              f"then run the checker again")
        return 1
    except Exception as e:
        print(f"NOT YET: {shown} does not load: {type(e).__name__}: {e}\n"
              f"  hint:     fix that line first, then run the checker again")
        return 1
    missing = [f for f in names if not callable(getattr(mod, f, None))]
    if missing:
        print(f"NOT YET: {shown} defines no {' or '.join(missing)}\n"
              f"  hint:     keep the names and signatures of the template")
        return 1
    try:
        check(mod)
    except NotWritten as e:
        print(f"not written yet: open {shown} and write {e} (replace its `raise NotImplementedError`)")
        return 1
    except Wrong as w:
        print(f"NOT YET: {w.call}\n  expected: {w.expected}\n  got:      {w.got}\n  hint:     {w.hint}")
        return 1
    if args.n < len(EXERCISES):
        print(f"All checks pass. Well done! Next: python -m exercises.check {args.n + 1} "
              f"(exercises/{EXERCISES[args.n + 1][0]})")
    else:
        print("All checks pass: that was the last one. You have rebuilt the moving parts of Pix2Seq-D!")
    return 0


if __name__ == "__main__":
    sys.exit(main())
