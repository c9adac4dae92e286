"""What the exercise checks share: failures as plain words (Wrong, NotWritten), calling the
student's code safely (call), comparing with a reference and naming the typical mistake
(expect), and hypothesis with fixed settings (run, tensors).
"""
import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis.extra.numpy import array_shapes, arrays


class Wrong(Exception):
    """A check failed: the call, the expected and the actual result, and a hint."""

    def __init__(self, call, expected, got, hint):
        super().__init__(call)
        self.call, self.expected, self.got, self.hint = call, expected, got, hint


class NotWritten(Exception):
    """The student's function still raises NotImplementedError."""


def fmt(x, limit=600, digits=5):
    """Short text of a tensor / array / number / nested list, floats to `digits` significant digits."""
    def text(v):
        if isinstance(v, (torch.Tensor, np.ndarray)):
            v = v.tolist()
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        if isinstance(v, list):
            return "[" + ", ".join(text(u) for u in v) + "]"
        if isinstance(v, tuple):
            return "(" + ", ".join(text(u) for u in v) + ("," if len(v) == 1 else "") + ")"
        return repr(v)
    s = text(x)
    return s if len(s) <= limit else s[:s.rfind(", ", 0, limit) + 2] + "..."


def fmt_pair(want, got, limit=600):
    """fmt of both, with more digits where 5 print them alike (gamma(0.0): 1 and 1)."""
    for digits in (5, 10, 17):
        a, b = fmt(want, limit, digits), fmt(got, limit, digits)
        if a != b:
            break
    return a, b


def call(fn, what, *args, hint="read the contract in the exercise's docstring", **kwargs):
    """Run the student's fn. The templates' NotImplementedError("exercise N: ...") (or a bare one)
    -> NotWritten; any other error (torch's own NotImplementedErrors too) or an exit -> Wrong naming it."""
    try:
        return fn(*args, **kwargs)
    except SystemExit as e:
        raise Wrong(what, "a result", f"it exits (SystemExit: {e.code!r})", "return the result: do not call "
                    "sys.exit() or exit() in the function") from None
    except Exception as e:
        if isinstance(e, NotImplementedError) and (not str(e) or str(e).startswith("exercise ")):
            raise NotWritten(fn.__name__) from None
        message = " ".join(str(e).split())  # a compiler's message spans lines: keep it on one
        raise Wrong(what, "a result", f"an error: {type(e).__name__}: {message[:400]}", hint) from None


def expect(what, want, got, hint, mistakes=(), rtol=0.0, atol=0.0, integer=False):
    """Compare got with want (a tensor); if it differs, find the first typical mistake it matches.

    mistakes: [(tensor the mistake would give, or predicate on got as float64, hint), ...]."""
    if not isinstance(got, torch.Tensor):
        raise Wrong(what, f"a torch.Tensor of shape {list(want.shape)}", f"{type(got).__name__}: {fmt(got)}",
                    "return a torch.Tensor")
    if got.shape != want.shape:
        raise Wrong(what, f"shape {list(want.shape)}: {fmt(want)}", f"shape {list(got.shape)}: {fmt(got)}",
                    "the shape is wrong: compare with the shapes in the docstring")
    if integer and (got.dtype.is_floating_point or got.dtype.is_complex):
        raise Wrong(what, f"integers: {fmt(want)}", f"dtype {got.dtype}: {fmt(got)}",
                    "return an integer tensor (torch.long or torch.uint8)")
    g, want = got.detach().cpu().double(), want.detach().cpu().double()

    def close(a):
        return bool(torch.isclose(g, a.double(), rtol, atol).all())
    if close(want):
        return
    expected, got = fmt_pair(want, got)
    if want.numel() > 12:  # long: say where they differ
        bad = ~torch.isclose(g, want, rtol, atol)
        i = tuple(int(v) for v in bad.nonzero()[0])
        count = int(bad.sum())
        at, there = fmt_pair(want[i], g[i])
        expected = (f"{at} at index {list(i)}, " + ("1 wrong value" if count == 1 else
                                                     f"the first of {count} wrong values") + f" out of {want.numel()}")
        got = f"{there} there, all: {fmt(g, 200)}"
    for alt, alt_hint in mistakes:
        if alt(g) if callable(alt) else close(alt):
            raise Wrong(what, expected, got, alt_hint)
    raise Wrong(what, expected, got, hint)


def run(prop, max_examples=40, examples=(), **strategies):
    """Run the property now: first the explicit `examples` (dicts of arguments; a failure there is
    reported as is, without shrinking: cheap for slow checks), then hypothesis's examples, whose
    shrunk first failure propagates."""
    test = given(**strategies)(prop)
    for ex in reversed(examples):
        test = example(**ex)(test)
    settings(max_examples=max_examples, database=None, derandomize=True, deadline=None, print_blob=False,
             report_multiple_bugs=False, suppress_health_check=list(HealthCheck))(test)()


def tensors(dtype, elements, min_dims=1, max_dims=2, max_side=4, shape=None):
    """Small torch tensors drawn as numpy arrays (so hypothesis shrinks sizes and values)."""
    shape = array_shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side) if shape is None else shape
    return arrays(dtype, shape, elements=elements).map(lambda a: torch.from_numpy(a.copy()))
