"""python -m kernels.bench [--out bench_out] [--quick] [--compile-only]

As in llm.c's dev/cuda: first check every kernel against its PyTorch reference, then time it.
For each kernel and size: the median time (triton.testing.do_bench, which flushes L2 between
runs), the bytes the fused kernel must move at least (its module docstring), the achieved GB/s,
that rate as a fraction of a measured device-to-device copy, the speed-up over the eager
reference and over torch.compile of the same reference, and for the CE the peak memory of
forward + backward. Writes <out>/bench.json and <out>/bench.png and prints a table.

Without a CUDA GPU it says so, runs the check through Triton's interpreter, compiles every
kernel for sm_90 (an H100) without running it (--compile-only, when Triton ships ptxas), and
exits 0 if all passed.
"""
import argparse
import json
import os
import subprocess
import sys

import torch

import kernels

COMPILE_ONLY = "--compile-only" in sys.argv[1:]
if COMPILE_ONLY:
    os.environ["TRITON_INTERPRET"] = "0"
elif not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede triton's first import (kernels.require's too)
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if __name__ == "__main__":
    kernels.require("python -m kernels.bench")  # one line, before `import triton` fails

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import bits  # noqa: E402
import diffusion  # noqa: E402
import losses  # noqa: E402
from kernels import bits as k_bits  # noqa: E402
from kernels import ddim as k_ddim  # noqa: E402
from kernels import softmax_ce as k_ce  # noqa: E402

G, K, N = 2, 256, 8  # the paper's softmax groups (class, identity) of 2**8 entries
SCALE = 0.1


def ce_inputs(B, H, W, dtype, device, k=K):
    g = torch.Generator(device=device).manual_seed(0)
    logits = (3 * torch.randn(B, G, k, H, W, generator=g, device=device)).to(dtype).requires_grad_()
    target = torch.randint(0, k, (B, H, W, G), generator=g, device=device)
    weights = losses.size_weights(torch.randint(0, 5, (B, H, W), generator=g, device=device), 0.2)
    return logits, target, weights


def ce_train_ref(logits, target, weights):
    """What Pix2SeqD.train_loss + decode run: the mean weighted CE and m_pred; grad of the loss."""
    return losses.softmax_ce(logits, target, weights).mean(), losses.expected_bits(logits, SCALE)


def ce_train_kernel(logits, target, weights):
    loss, m_pred = k_ce.weighted_softmax_ce(logits, target, weights, SCALE)
    return loss.mean(), m_pred


# ---- correctness ------------------------------------------------------------------------

def check(device):
    """Each kernel vs its reference on small odd shapes; returns [(name, ok, note)]."""
    results = []

    def record(name, fn):
        try:
            fn()
            results.append((name, True, ""))
        except AssertionError as e:
            results.append((name, False, str(e).splitlines()[0] if str(e) else "mismatch"))

    g = torch.Generator(device=device).manual_seed(0)
    mask = torch.randint(0, 256, (3, 17, 29, 2), generator=g, device=device)
    m_bits = k_bits.mask_to_analog(mask)

    def bits_exact():
        assert torch.equal(m_bits, bits.mask_to_analog(mask)), "mask_to_analog differs"
        m = torch.randn(m_bits.shape, generator=g, device=device)
        assert torch.equal(k_bits.analog_to_mask(m), bits.analog_to_mask(m)), "analog_to_mask differs"
    record("bits (exact)", bits_exact)

    def ddim_close():
        x_t, x_pred = torch.randn(2, 2, 16, 33, 35, generator=g, device=device).unbind(0)
        for t_now, t_next in [(1.0, 0.85), (0.4, 0.2), (0.05, 0.0)]:
            torch.testing.assert_close(k_ddim.ddim_step(x_t, x_pred, t_now, t_next, SCALE),
                                       diffusion.ddim_step(x_t, x_pred, t_now, t_next, SCALE), rtol=1e-5, atol=1e-5)
    record("ddim (fp32)", ddim_close)

    dtypes = [torch.float32] + ([torch.bfloat16] if not INTERPRET else [])
    for dtype in dtypes:
        for k, (B, H, W) in [(256, (2, 5, 7)), (8, (2, 9, 70))]:
            def ce_close(dtype=dtype, k=k, B=B, H=H, W=W):
                logits, target, weights = ce_inputs(B, H, W, dtype, device, k)
                outs = k_ce.weighted_softmax_ce(logits, target, weights, SCALE)
                refs = losses.softmax_ce(logits, target, weights), losses.expected_bits(logits, SCALE)
                torch.testing.assert_close(outs[0], refs[0], rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(outs[1], refs[1], rtol=0, atol=1e-5 * SCALE)
                d_outs = [torch.randn(o.shape, generator=g, device=device) for o in outs]
                grad, = torch.autograd.grad(outs, logits, d_outs)
                grad_ref, = torch.autograd.grad(refs, logits, d_outs)
                tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=1e-5)
                torch.testing.assert_close(grad, grad_ref, **tol)
            record(f"softmax_ce K={k} ({str(dtype)[6:]})", ce_close)
    return results


def compile_for_sm90():
    """Compile every kernel variant for an H100 (GPUTarget cuda 90) without a GPU; report ptxas
    registers and spills. Catches what the interpreter lets through (non-constexpr loop bounds...)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        ptxas = get_ptxas(90).path
    except (ImportError, FileNotFoundError, RuntimeError) as e:  # a Triton without the NVIDIA toolchain
        print(f"  skipped: this Triton cannot compile for CUDA ({type(e).__name__}: {e})")
        return True

    def variant(fn, ptr_types, constexprs, num_warps):
        sig = {a: "constexpr" if a in constexprs else ptr_types.get(a, "i32" if a in ("HW", "n_blocks", "N") else "fp32")
               for a in fn.arg_names}
        attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a.endswith("_ptr")}
        return fn, sig, constexprs, attrs, num_warps

    f32 = dict(G=G, K=K, N=N, ACC=tl.float32, BLOCK_P=k_ce._launch_config(K, 10 ** 6)[0])
    variants = [
        variant(k_bits.mask_to_analog_kernel, {"mask_ptr": "*i64", "m_ptr": "*fp32"},
                dict(N_CLASS=8, N_IDENTITY=8, WIDE=False, BLOCK=k_bits.BLOCK), 4),
        variant(k_bits.mask_to_analog_kernel, {"mask_ptr": "*i64", "m_ptr": "*fp32"},
                dict(N_CLASS=40, N_IDENTITY=8, WIDE=True, BLOCK=k_bits.BLOCK), 4),
        *(variant(k_bits.analog_to_mask_kernel, {"m_ptr": dt, "mask_ptr": "*i64"},
                  dict(N_CLASS=8, N_IDENTITY=8, BLOCK=k_bits.BLOCK), 4) for dt in ("*fp32", "*bf16", "*fp64")),
        variant(k_ddim.ddim_step_kernel, {"x_t_ptr": "*fp32", "x_pred_ptr": "*fp32", "x_next_ptr": "*fp32"},
                dict(BLOCK=k_ddim.BLOCK), 4),
        variant(k_ddim.ddim_step_kernel, {"x_t_ptr": "*bf16", "x_pred_ptr": "*bf16", "x_next_ptr": "*bf16"},
                dict(BLOCK=k_ddim.BLOCK), 4)]
    fp32_ptrs = {p: "*fp32" for p in ("w_ptr", "loss_ptr", "m_pred_ptr", "lse_ptr", "ce_ptr", "d_loss_ptr",
                                       "d_m_pred_ptr")}
    for dt in ("fp32", "bf16"):
        ptrs = {"x_ptr": "*" + dt, "dx_ptr": "*" + dt, "target_ptr": "*i64", **fp32_ptrs}
        warps = k_ce._launch_config(K, 10 ** 6)[1]
        for flags in (dict(HAS_TARGET=True, SAVE_LSE=True, SAVE_CE=False),
                      dict(HAS_TARGET=True, SAVE_LSE=True, SAVE_CE=True),
                      dict(HAS_TARGET=False, SAVE_LSE=False, SAVE_CE=False)):
            variants.append(variant(k_ce.softmax_ce_fwd_kernel, ptrs, {**f32, **flags}, warps))
        for flags in (dict(HAS_D_LOSS=True, HAS_D_M=True), dict(HAS_D_LOSS=True, HAS_D_M=False)):
            variants.append(variant(k_ce.softmax_ce_bwd_kernel, ptrs, {**f32, **flags}, warps))
    block_p, warps = k_ce._launch_config(8, 10 ** 6)
    variants.append(variant(k_ce.softmax_ce_bwd_kernel, {"x_ptr": "*fp32", "dx_ptr": "*fp32", "target_ptr": "*i64", **fp32_ptrs},
                            dict(G=G, K=8, N=3, HAS_D_LOSS=True, HAS_D_M=True, ACC=tl.float32, BLOCK_P=block_p), warps))
    for fn, sig, constexprs, attrs, num_warps in variants:
        kernel = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                                options=dict(num_warps=num_warps))
        ptx = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_{os.getpid()}.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        log = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", ptx, "-o", os.devnull], capture_output=True, text=True)
        os.remove(ptx)
        usage = [line.split(":", 1)[-1].strip() for line in log.stderr.splitlines() if "Used" in line or "spill" in line]
        flags = {k: v for k, v in constexprs.items() if k not in ("BLOCK", "G", "N", "ACC")}
        print(f"  sm_90  {fn.__name__:24s} {sig[next(a for a in fn.arg_names if a.endswith('_ptr'))]:6s} "
              f"{flags}  warps={num_warps}: {'; '.join(usage) or log.stderr.strip()[-200:]}")
        if log.returncode:
            return False
    return True


# ---- timing (CUDA) ------------------------------------------------------------------------

def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def peak_mb(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def compiled(fn):
    c = torch.compile(fn, dynamic=False)

    def run(*args):
        try:
            return c(*args)
        except Exception as e:  # a torch.compile failure is a result to report, not a reason to stop
            print(f"  torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
            raise
    return run


IMAGE_SIZES = [(1, 64), (4, 256), (16, 256), (16, 512), (64, 512)]  # (B, S): bits [B, 16, S, S]
CE_SIZES = [(1, 64), (2, 128), (4, 256), (2, 512), (4, 512)]  # logits [B, 2, 256, S, S]: 2 GB fp32 at the end


def cases(image_sizes, ce_sizes, dev="cuda", dtypes=(torch.float32, torch.bfloat16)):
    """(kernel, size label, bytes moved, {impl: fn}, measure peak memory?) from small to GPU-filling;
    the CE cases for each of dtypes. A generator on purpose: each case's fns close over the loop's
    tensors, so time a case before drawing the next (and only one size is in GPU memory at a time)."""
    for B, S in image_sizes:
        mask = torch.randint(0, 256, (B, S, S, 2), device=dev)
        m = torch.randn(B, 16, S, S, device=dev)
        x_pred = torch.randn_like(m) * 0.2
        px, label = B * S * S, f"{B}x{S}x{S}"
        yield ("mask_to_analog", label, px * (16 + 64), {
            "kernel": lambda: k_bits.mask_to_analog(mask, check=False),
            "kernel+check": lambda: k_bits.mask_to_analog(mask),
            "eager": lambda: bits.mask_to_analog(mask), "compile": lambda: C["m2a"](mask)}, False)
        yield ("analog_to_mask", label, px * (64 + 16), {
            "kernel": lambda: k_bits.analog_to_mask(m), "eager": lambda: bits.analog_to_mask(m),
            "compile": lambda: C["a2m"](m)}, False)
        yield ("ddim_step", label, m.numel() * 12, {
            "kernel": lambda: k_ddim.ddim_step(m, x_pred, 0.6, 0.45, SCALE),
            "eager": lambda: diffusion.ddim_step(m, x_pred, 0.6, 0.45, SCALE),
            "compile": lambda: C["ddim"](m, x_pred, 0.6, 0.45, SCALE)}, False)
    for dtype in dtypes:
        s = torch.finfo(dtype).bits // 8
        for B, S in ce_sizes:
            logits, target, weights = ce_inputs(B, S, S, dtype, dev)
            px, label = B * S * S, f"{B}x{S}x{S} {str(dtype)[6:]}"
            fwd = G * K * s + G * 8 + 4 + 4 + G * N * 4 + G * 4  # logits, target, w -> loss, m_pred, lse
            bwd = 2 * G * K * s + G * 4 + G * 8 + 4 + 4  # logits, lse, target, w, dL -> dx
            yield ("ce fwd+bwd", label, px * (fwd + bwd), {
                "kernel": lambda: torch.autograd.grad(ce_train_kernel(logits, target, weights)[0], logits),
                "eager": lambda: torch.autograd.grad(ce_train_ref(logits, target, weights)[0], logits),
                "compile": lambda: torch.autograd.grad(C["ce"](logits, target, weights)[0], logits)}, True)
            x = logits.detach()
            yield ("ce infer (m_pred)", label, px * (G * K * s + G * N * 4), {
                "kernel": lambda: k_ce.weighted_softmax_ce(x, None, None, SCALE),
                "eager": lambda: losses.expected_bits(x, SCALE), "compile": lambda: C["eb"](x, SCALE)}, False)


def time_cases(case_iter, copy_gbs):
    """Times every implementation of every case (see cases()), prints the table; returns its rows."""
    rows = []
    head = f"{'kernel':18s} {'size':18s} {'MB':>8s} {'ms':>8s} {'GB/s':>7s} {'%copy':>6s} {'x eager':>8s} {'x compile':>9s}"
    print(head + "  peak MB kernel/eager/compile")
    for name, label, nbytes, impls, mem in case_iter:
        ms = {}
        for impl, fn in impls.items():
            try:
                ms[impl] = bench(fn)
            except Exception:  # only torch.compile may fail here (compiled() says why): keep the other columns
                if impl != "compile":
                    raise
                ms[impl] = None
        row = dict(kernel=name, size=label, bytes=nbytes, ms=ms, gbps=nbytes / ms["kernel"] * 1e-6)
        row["frac_copy"] = row["gbps"] / copy_gbs
        row["speedup_eager"] = ms["eager"] / ms["kernel"]
        row["speedup_compile"] = ms["compile"] / ms["kernel"] if ms["compile"] else None
        if mem:
            row["peak_mb"] = {impl: peak_mb(fn) for impl, fn in impls.items() if ms[impl] is not None}
        rows.append(row)
        sc = f"{row['speedup_compile']:9.2f}" if row["speedup_compile"] else f"{'-':>9s}"
        peak = "  " + "/".join(f"{v:.0f}" for v in row["peak_mb"].values()) if mem else ""
        print(f"{name:18s} {label:18s} {nbytes / 2 ** 20:8.1f} {ms['kernel']:8.3f} {row['gbps']:7.0f} "
              f"{100 * row['frac_copy']:5.0f}% {row['speedup_eager']:8.2f} {sc}{peak}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


C = {}  # torch.compile of each reference, built in main()


def main():
    ap = argparse.ArgumentParser(description="check and time the Triton kernels against their references")
    ap.add_argument("--out", default="bench_out", help="folder for bench.json and bench.png")
    ap.add_argument("--quick", action="store_true", help="only the three smallest sizes")
    ap.add_argument("--compile-only", action="store_true", help="compile for sm_90 without a GPU and stop")
    args = ap.parse_args()
    if args.compile_only:
        print("compile-only check (no GPU needed): every kernel variant for sm_90 with Triton's ptxas")
        sys.exit(0 if compile_for_sm90() else 1)
    os.environ["PIX2SEQD_KERNELS"] = "0"  # the references take their PyTorch path
    gpu = torch.cuda.is_available() and not INTERPRET
    if not gpu:
        print("no CUDA GPU (or TRITON_INTERPRET=1): nothing to time; checking the kernels against their "
              "references in Triton's interpreter")
    results = check("cuda" if torch.cuda.is_available() else "cpu")
    for name, ok, note in results:
        print(f"  check  {name:28s} {'ok' if ok else 'FAIL ' + note}")
    ok = all(r[1] for r in results)
    if not gpu:  # the compile-only check needs the interpreter off, so a fresh process
        compile_only = [sys.executable, "-m", "kernels.bench", "--compile-only"]
        compiled_ok = subprocess.run(compile_only, env={**os.environ, "TRITON_INTERPRET": "0"}).returncode == 0
        print("all kernels agree with their references (sm_90 compile check: above); nothing timed without a GPU"
              if ok and compiled_ok else "FAILED: see the lines above")
        sys.exit(0 if ok and compiled_ok else 1)
    if not ok:
        sys.exit("a kernel disagrees with its reference: not timing it")

    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, 64)
    C.update(m2a=compiled(bits.mask_to_analog), a2m=compiled(bits.analog_to_mask), ddim=compiled(diffusion.ddim_step),
             ce=compiled(ce_train_ref), eb=compiled(losses.expected_bits))
    src = torch.empty(2 ** 28, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    copy_gbs = 2 * src.nbytes / bench(lambda: dst.copy_(src)) * 1e-6
    src = dst = None  # free the 2 GiB before the kernels run
    print(f"{torch.cuda.get_device_name()}: device-to-device copy {copy_gbs:.0f} GB/s")
    n = 3 if args.quick else None
    rows = time_cases(cases(IMAGE_SIZES[:n], CE_SIZES[:n]), copy_gbs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), copy_gbps=copy_gbs, torch=torch.__version__,
                       triton=triton.__version__, rows=rows), f, indent=1)
    plot(rows, copy_gbs, os.path.join(args.out, "bench.png"))
    print(f"wrote {args.out}/bench.json and {args.out}/bench.png")


def plot(rows, copy_gbs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(r["kernel"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for dtype in ("", "float32", "bfloat16"):
            sel = [r for r in rows if r["kernel"] == name and (not dtype or r["size"].endswith(dtype))]
            if not sel or (not dtype and name.startswith("ce")):
                continue
            for impl, style in (("kernel", "o-"), ("eager", "s--"), ("compile", "^:")):
                pts = [(r["bytes"] / 2 ** 20, r["bytes"] / r["ms"][impl] * 1e-6) for r in sel if r["ms"].get(impl)]
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{impl} {dtype}".strip())
        ax.axhline(copy_gbs, color="gray", lw=0.8, label="copy")
        ax.set(xscale="log", title=name, xlabel="MB moved (fused minimum)", ylabel="GB/s")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
