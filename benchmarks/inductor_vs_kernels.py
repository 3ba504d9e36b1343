"""Does inductor earn its place? ``torch.compile`` (inductor, CPU) against each fused hand kernel.

For each fused piece of the fast path the script times, alternating in one process (median of
``--iters`` rounds after warm-up): the eager PyTorch formulation, the same formulation compiled
by inductor, and the ``torch.ops.lstc_gait`` op (C++ kernel):

- ``bn_relu_concat``: training BN + ReLU of a block's three branches into their concatenation,
  forward + backward (block-1 shapes);
- ``max_pool_hw2``: the 2x2 max-pool, forward + backward;
- ``block_tail``: the inference tail of a block (LSTC pointwise conv + ReLU, concatenation, fuse
  1x1x1 conv + ReLU, BNs folded), op ``lstc_gait::block_tail``.

A hand kernel whose time inductor comes within 10 % of is a candidate for deletion. Inductor
compiles for minutes on 2 cores: the shapes are one block-1 chunk (``--batch`` sequences).

Usage: python benchmarks/inductor_vs_kernels.py [--batch 2] [--iters 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lstc_gait import ops

CL = torch.channels_last_3d


def timed(fns: dict[str, Callable[[], object]], iters: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up (and compilation)
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def bn_relu_concat_case(batch: int):
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, 8, 30, 64, 44, generator=gen).contiguous(memory_format=CL).requires_grad_()
          for _ in range(3)]
    ws = [torch.rand(8, generator=gen).add_(0.5).requires_grad_() for _ in range(3)]
    bs = [torch.randn(8, generator=gen).requires_grad_() for _ in range(3)]
    grad = torch.randn(batch, 24, 30, 64, 44, generator=gen).contiguous(memory_format=CL)

    def plain(xs, ws, bs):
        return torch.cat([F.relu(F.batch_norm(x, None, None, w, b, training=True)) for x, w, b in zip(xs, ws, bs)],
                         dim=1)

    compiled = torch.compile(plain)

    def run(fn):
        def step():
            out = fn(xs, ws, bs)
            out.backward(grad)
        return step

    def kernel():
        out = ops.batch_norm_relu_concat(xs, ws, bs, [1e-5] * 3, [])[0]
        out.backward(grad)

    return {"eager": run(plain), "inductor": run(compiled), "kernel": kernel}


def max_pool_case(batch: int):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 16, 30, 64, 44, generator=gen).contiguous(memory_format=CL).requires_grad_()
    grad = torch.randn(batch, 16, 30, 32, 22, generator=gen).contiguous(memory_format=CL)

    def plain(x):
        return F.max_pool3d(x, (1, 2, 2))

    compiled = torch.compile(plain)

    def run(fn):
        def step():
            fn(x).backward(grad)
        return step

    return {"eager": run(plain), "inductor": run(compiled), "kernel": run(ops.max_pool_hw2)}


def block_tail_case(batch: int):
    gen = torch.Generator().manual_seed(2)
    t = torch.rand(batch, 8, 30, 64, 44, generator=gen).contiguous(memory_format=CL)
    s = torch.rand(batch, 8, 30, 64, 44, generator=gen).contiguous(memory_format=CL)
    d = torch.randn(batch, 16, 30, 64, 44, generator=gen).contiguous(memory_format=CL)
    wj, bj = torch.randn(8, 16, 1, 1, 1, generator=gen), torch.randn(8, generator=gen)
    wf, bf = torch.randn(16, 24, 1, 1, 1, generator=gen), torch.randn(16, generator=gen)

    def plain(t, s, d):
        z = F.relu(F.conv3d(d, wj, bj))
        return F.relu(F.conv3d(torch.cat([t, s, z], 1), wf, bf))

    compiled = torch.compile(plain)

    def run(fn):
        def step():
            with torch.no_grad():
                fn(t, s, d)
        return step

    def kernel():
        with torch.no_grad():
            ops.block_tail([t, s], d, wj, bj, wf, bf)

    return {"eager": run(plain), "inductor": run(compiled), "kernel": kernel}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--cases", default="bn_relu_concat,max_pool_hw2,block_tail")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, C++ kernels: {ops.load_library()}")
    print("| piece | eager ms | inductor ms | hand kernel ms | inductor / kernel | compile s |")
    print("|---|---:|---:|---:|---:|---:|")
    cases = {"bn_relu_concat": bn_relu_concat_case, "max_pool_hw2": max_pool_case, "block_tail": block_tail_case}
    for name in args.cases.split(","):
        fns = cases[name](args.batch)
        t0 = time.perf_counter()
        fns["inductor"]()  # first call compiles
        compile_s = time.perf_counter() - t0
        ms = timed(fns, args.iters)
        kernel = ms.get("kernel")
        ratio = f"{ms['inductor'] / kernel:.2f}" if kernel else "n/a"
        kernel_s = f"{kernel:.1f}" if kernel else "n/a (deleted)"
        print(f"| {name} | {ms['eager']:.1f} | {ms['inductor']:.1f} | {kernel_s} | {ratio} | {compile_s:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
