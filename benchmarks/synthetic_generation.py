"""SynthGait generation speed: raw frames/s (render + PNG write) for 1 and 2 workers, and the time to
generate + prepare the default instance the main job uses.

    python benchmarks/synthetic_generation.py [--subjects 4] [--workers 1 2] [--no-default]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import __version__ as pillow_version

from lstc_gait.data.synthetic import ALL_VIEWS, SynthParams, ensure_synthetic, generate_raw


def machine() -> str:
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # the generator itself does not need torch
        torch_version = "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    return (f"machine: {platform.processor() or platform.machine()}, cpu_count={os.cpu_count()}, "
            f"python {platform.python_version()}, numpy {np.__version__}, pillow {pillow_version}, "
            f"torch {torch_version}, load average at start {load[0]}")


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4, help="subjects in the timed instance (x10 types x11 views)")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-default", action="store_true", help="skip timing the default instance")
    args = ap.parse_args()
    print(machine())
    params = SynthParams(num_subjects=args.subjects, views=list(ALL_VIEWS), frames=args.frames)
    total = params.num_frames_total()
    print(f"timed instance: {args.subjects} subjects x {len(params.types)} types x {len(params.views)} views x "
          f"{args.frames} frames = {total} frames of {params.width}x{params.height}")
    with tempfile.TemporaryDirectory(prefix="synthgait-bench-") as tmp:
        for w in args.workers:
            root = Path(tmp) / f"w{w}"
            c0, t0 = _cpu_seconds(), time.perf_counter()
            n = generate_raw(root, params, workers=w, progress=False)
            dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            # CPU seconds (this process + finished workers) show the cost per frame even when other
            # jobs share the cores; wall-clock frames/s is what a user sees
            print(f"generate_raw workers={w}: {n} frames in {dt:.1f} s = {n / dt:,.0f} frames/s wall; "
                  f"{1000 * cpu / n:.2f} CPU-ms/frame = {n / cpu:,.0f} frames/s per busy core")
            shutil.rmtree(root)
        if not args.no_default:
            d = SynthParams.default()
            c0, t0 = _cpu_seconds(), time.perf_counter()
            ensure_synthetic(d, Path(tmp) / "data", workers=2, progress=False)
            dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
            print(f"default instance ({d.num_frames_total()} frames): generate + prepare with 2 workers "
                  f"{dt:.1f} s wall, {cpu:.1f} CPU-s (= {cpu / 2:.1f} s on 2 otherwise idle cores)")
            t0 = time.perf_counter()
            ensure_synthetic(d, Path(tmp) / "data", workers=2, progress=False)
            print(f"second call (cached): {1000 * (time.perf_counter() - t0):.2f} ms")


if __name__ == "__main__":
    main()
