"""Evaluation speed at OU-MVLP test scale (and CASIA-B scale) on synthetic embeddings.

OU-MVLP: 5,154 subjects x 14 views x 2 sequences, ~5% of sequences missing (~137k sequences),
embeddings = subject centre + per-sequence noise. Runs the full protocol (rank-1 with misses
counted and excluded, one pass) and, separately, protocol_metrics (rank-1 tables + mAP / mINP in
one pass). Prints wall time and peak RSS per case and the machine.

    python benchmarks/eval_scale.py            # full scale
    python benchmarks/eval_scale.py --quick    # 300 subjects, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np
import torch

from lstc_gait.evaluation.protocols import _ou_rows, _Split, _summary, evaluate_casia_b, protocol_metrics

OU_VIEWS = ["000", "015", "030", "045", "060", "075", "090", "180", "195", "210", "225", "240", "255", "270"]
CASIA_VIEWS = [f"{a:03d}" for a in range(0, 181, 18)]
CASIA_TYPES = [f"nm-0{i}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def ou_mvlp_data(subjects: int, shape: tuple[int, ...], missing: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_full = subjects * len(OU_VIEWS) * 2
    keep = rng.random(n_full) >= missing
    sid = np.repeat(np.arange(subjects), len(OU_VIEWS) * 2)[keep]
    view = np.tile(np.repeat(np.arange(len(OU_VIEWS)), 2), subjects)[keep]
    seq = np.tile([0, 1], subjects * len(OU_VIEWS))[keep]
    dim = int(np.prod(shape))
    emb = torch.empty((len(sid), dim), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn((subjects, dim), generator=gen)
    view_shift = 0.6 * torch.randn((len(OU_VIEWS), dim), generator=gen)
    for s in range(0, len(sid), 16384):  # fill in slices to keep the peak low
        sl = slice(s, s + 16384)
        noise = torch.randn((len(sid[sl]), dim), generator=gen)
        emb[sl] = centres[sid[sl]] + view_shift[view[sl]] + 1.1 * noise
    subjects_s = np.array([f"{2 * i + 2:05d}" for i in range(subjects)])[sid]
    return emb.view(len(sid), *shape), subjects_s, np.array(["00", "01"])[seq], np.array(OU_VIEWS)[view]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def time_case(name: str, fn) -> None:
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    dt, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(f"{name:<48} {dt:8.2f} s wall  {cpu:8.2f} s cpu   peak RSS {peak_rss_gb():5.2f} GB   {out}  "
          f"(load avg {os.getloadavg()[0]:.1f})", flush=True)


def ou_protocol_both_modes(emb, subj, types, views) -> str:
    """The protocol in both counting modes from one search pass (what evaluate_ou_mvlp runs once)."""
    split = _Split(emb, subj, types, views, "euclidean")
    pidx, gidx = _ou_rows(split)
    res = split.run(pidx, gidx, include_identical=False, with_ranks=False)
    counts = split.tally(res, np.arange(len(pidx)), pidx, gidx, include_identical=False)
    counted = _summary({"rank1": counts}, True).loc["rank1", "mean"]
    excluded = _summary({"rank1": counts}, False).loc["rank1", "mean"]
    return f"rank1 {counted:.2f} (misses counted) / {excluded:.2f} (excluded)"


def run_ou(subjects: int, shape: tuple[int, ...], seed: int, with_map: bool) -> None:
    emb, subj, types, views = ou_mvlp_data(subjects, shape, 0.05, seed=seed)
    label = "D=256" if len(shape) == 1 else "(N,256,8) parts"
    print(f"OU-MVLP synthetic {label}: {subjects} subjects, {len(subj)} sequences "
          f"({int((types == '00').sum())} probes, {int((types == '01').sum())} gallery)", flush=True)
    time_case(f"OU-MVLP protocol, both modes, {label}", lambda: ou_protocol_both_modes(emb, subj, types, views))
    if with_map:
        def full() -> str:
            _, m = protocol_metrics("ou_mvlp", emb, subj, types, views)
            return f"rank1 {m['rank1']:.2f} / {m['rank1_excl_missing']:.2f}  mAP {m['mAP']:.2f} mINP {m['mINP']:.2f}"
        time_case(f"OU-MVLP protocol_metrics (+mAP/mINP), {label}", full)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run (300 subjects)")
    ap.add_argument("--subjects", type=int, default=None)
    ap.add_argument("--skip-parts", action="store_true", help="skip the part-wise (N, 256, 8) case")
    ap.add_argument("--skip-flat", action="store_true", help="skip the CASIA-B and flat D=256 cases")
    ap.add_argument("--skip-map", action="store_true", help="skip protocol_metrics (rank-1 + mAP/mINP)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    subjects = args.subjects or (300 if args.quick else 5154)
    print(f"machine: {platform.platform()} | processor: {platform.processor() or 'n/a'} | "
          f"cpus: {os.cpu_count()} | torch {torch.__version__} threads {torch.get_num_threads()} | "
          f"load avg {os.getloadavg()[0]:.2f}", flush=True)

    if not args.skip_flat:
        run_flat(subjects, with_map=not args.skip_map)
    if not args.skip_parts:
        run_ou(subjects, (256, 8), seed=2, with_map=False)
    print(f"load avg at end {os.getloadavg()[0]:.2f}", file=sys.stderr)


def run_flat(subjects: int, with_map: bool) -> None:
    # CASIA-B test scale: 50 subjects x 10 types x 11 views
    rng = np.random.default_rng(1)
    n = 50 * len(CASIA_TYPES) * len(CASIA_VIEWS)
    cs = np.repeat(np.arange(50), len(CASIA_TYPES) * len(CASIA_VIEWS))
    cemb = (rng.standard_normal((50, 256))[cs] + 1.6 * rng.standard_normal((n, 256))).astype(np.float32)
    ctypes = np.tile(np.repeat(CASIA_TYPES, len(CASIA_VIEWS)), 50)
    cviews = np.tile(CASIA_VIEWS, 50 * len(CASIA_TYPES))
    csub = np.array([f"{i + 75:03d}" for i in cs])
    evaluate_casia_b(cemb, csub, ctypes, cviews)  # warm-up (imports, allocator)
    time_case(f"CASIA-B evaluate_casia_b N={n} D=256",
              lambda: f"NM {evaluate_casia_b(cemb, csub, ctypes, cviews).loc['NM', 'mean']:.2f}")
    time_case(f"CASIA-B protocol_metrics N={n} D=256",
              lambda: "mAP {:.2f}".format(protocol_metrics("casia_b", cemb, csub, ctypes, cviews)[1]["mAP"]))

    run_ou(subjects, (256,), seed=0, with_map=with_map)


if __name__ == "__main__":
    main()
