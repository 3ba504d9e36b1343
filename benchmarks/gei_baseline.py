"""Gait-energy-image + nearest-neighbour baseline on SynthGait, CASIA-B protocol (test subjects only).

GEI = mean of a sequence's central 64x44 prepared frames; Euclidean nearest neighbour; gallery
nm-01..04, probes NM / BG / CL. Cross-view table from ``lstc_gait.evaluation.evaluate_casia_b``
(identical view excluded); same-view accuracy (the diagonal the protocol leaves out) computed here.
It generates only the test subjects of the instance (their data does not depend on the others).

    python benchmarks/gei_baseline.py [--subjects 124] [--frames 30] [--seed 0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lstc_gait.data import open_cache, prepare_cache
from lstc_gait.data.synthetic import ALL_VIEWS, SynthParams, casia_b_train_count, generate_raw
from lstc_gait.evaluation import evaluate_casia_b
from lstc_gait.evaluation.baselines import gait_energy_images as _library_geis

PROBES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}
GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")


def gait_energy_images(cache) -> np.ndarray:
    """(N, 64*44) float32 GEIs of every cached sequence, in cache order (lstc_gait.evaluation.baselines)."""
    return _library_geis(cache, None, 44)


def same_view_rank1(emb: np.ndarray, index: pd.DataFrame) -> pd.DataFrame:
    """Rank-1 (%) with gallery and probe from the same view: rows NM/BG/CL, columns views + mean."""
    views = sorted(index["view"].unique())
    subj = index["subject"].to_numpy()
    table = {}
    for name, probe_types in PROBES.items():
        row = {}
        for v in views:
            g = np.flatnonzero((index["view"] == v) & index["type"].isin(GALLERY))
            p = np.flatnonzero((index["view"] == v) & index["type"].isin(probe_types))
            if len(g) == 0 or len(p) == 0:
                continue
            d = (emb[p] ** 2).sum(1)[:, None] + (emb[g] ** 2).sum(1)[None, :] - 2.0 * emb[p] @ emb[g].T
            row[v] = 100.0 * float(np.mean(subj[g][d.argmin(1)] == subj[p]))
        row["mean"] = float(np.mean(list(row.values())))
        table[name] = row
    return pd.DataFrame(table).T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=124, help="instance size; the test subjects are evaluated")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="keep raw + cache here (reused when present)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, cpu_count={os.cpu_count()}, "
          f"load average {os.getloadavg()[0] if hasattr(os, 'getloadavg') else 'n/a'}")
    params = SynthParams(num_subjects=args.subjects, views=list(ALL_VIEWS), frames=args.frames, seed=args.seed)
    test_ids = list(range(casia_b_train_count(args.subjects) + 1, args.subjects + 1))
    print(f"SynthGait {params.key()}: {args.subjects} subjects, test subjects {test_ids[0]:03d}-{test_ids[-1]:03d} "
          f"({len(test_ids)}, chance {100 / len(test_ids):.1f}%), {len(params.views)} views, {args.frames} frames")
    with tempfile.TemporaryDirectory(prefix="gei-") as tmp:
        work = args.workdir or Path(tmp)
        raw, cache_dir = work / f"synthgait-{params.key()}-test" / "raw", work / f"synthgait-{params.key()}-test" / "cache"
        t0 = time.perf_counter()
        generate_raw(raw, params, workers=args.workers, subjects=test_ids)
        t1 = time.perf_counter()
        prepare_cache([raw], "casia_b", cache_dir, workers=args.workers, min_frames=1)
        t2 = time.perf_counter()
        print(f"generate {t1 - t0:.1f} s, prepare {t2 - t1:.1f} s")
        cache = open_cache(cache_dir)
        index = cache.index
        emb = gait_energy_images(cache)
    cross = evaluate_casia_b(emb, index["subject"].to_numpy(), index["type"].to_numpy(), index["view"].to_numpy())
    same = same_view_rank1(emb, index)
    pd.set_option("display.width", 200)
    print("\nGEI + 1-NN, Euclidean, CASIA-B protocol, cross-view (identical view excluded), rank-1 %:")
    print(cross.round(1).to_string())
    print("\nsame view (gallery and probe from one view), rank-1 %:")
    print(same.round(1).to_string())
    print("\nsummary  same-view / cross-view mean rank-1 %:")
    for name in PROBES:
        print(f"  {name}: {same.loc[name, 'mean']:5.1f} / {cross.loc[name, 'mean']:5.1f}")


if __name__ == "__main__":
    main()
