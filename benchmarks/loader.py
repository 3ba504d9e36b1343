"""Training-batch throughput of the data loader, read from a prepared cache.

    python benchmarks/loader.py --cache CACHE_DIR [--batch-size 64 --workers 2 --seconds 10]

Without --cache a small cache is built first: SynthGait's tiny instance (lstc_gait.data.synthetic)
or, with --random-blobs, random ellipse sequences written straight into a cache. Batches are
(batch, 30, 64, 44) uint8 clips drawn with (position, seed) keys, exactly as training draws them.
The last line reads ``loader: N samples/s``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lstc_gait.data import TrainSequenceDataset, collate_train, open_cache, write_cache_from_arrays


def _blob_cache(folder: Path, num_sequences: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    records = []
    for i in range(num_sequences):
        t = int(rng.integers(20, 120))
        phase = np.linspace(0, 4 * np.pi, t)[:, None, None]
        rx = 8 + 3 * np.abs(np.sin(phase))
        blob = (((xx - 32) / rx) ** 2 + ((yy - 32) / 28.0) ** 2 <= 1).astype(np.uint8) * 255
        meta = {"subject": f"{i // 10:03d}", "type": f"nm-{i % 10:02d}", "view": "090", "seq": f"s{i}",
                "source": f"blob{i}"}
        records.append((meta, blob))
    write_cache_from_arrays(folder, records)
    return folder


def build_cache(args: argparse.Namespace) -> Path:
    if args.cache:
        return Path(args.cache)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="lstc_loader_"))
    if not args.random_blobs:
        try:
            from lstc_gait.data.synthetic import SynthParams, ensure_synthetic
        except ImportError as exc:
            print(f"synthetic generator unavailable ({exc}); using random blobs", file=sys.stderr)
        else:
            return Path(ensure_synthetic(SynthParams.tiny(), data_dir, workers=args.workers, progress=True))
    return _blob_cache(data_dir / "blobs", args.num_blob_sequences)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", help="a prepared cache folder (default: build a small one)")
    p.add_argument("--data-dir", help="where to build the default cache (default: a temp folder)")
    p.add_argument("--random-blobs", action="store_true", help="build the default cache from random blobs")
    p.add_argument("--num-blob-sequences", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-frames", type=int, default=30)
    p.add_argument("--sampling", default="ordered", choices=["ordered", "random"])
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time after warm-up")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cache = open_cache(build_cache(args))
    n = len(cache)
    ds = TrainSequenceDataset(cache, np.arange(n), np.zeros(n, dtype=np.int64), num_frames=args.num_frames,
                              sampling=args.sampling, width=44)
    rng = np.random.default_rng(args.seed)
    # Enough keys for the time budget at up to ~50k samples/s; (position, seed) like the samplers.
    num_keys = int(max(args.seconds, 1.0) * 50_000) + 20 * args.batch_size
    keys = list(zip(rng.integers(0, n, num_keys).tolist(), rng.integers(0, 2**62, num_keys).tolist()))
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=keys, num_workers=args.workers, collate_fn=collate_train,
                        persistent_workers=False, prefetch_factor=4 if args.workers else None)
    print(f"machine: processor={platform.processor() or platform.machine()!r} cpus={os.cpu_count()} "
          f"torch={torch.__version__} python={platform.python_version()}")
    print(f"cache: {cache.path} ({n} sequences, {cache.total_frames} frames); batch {args.batch_size} x "
          f"{args.num_frames} x 64 x 44 uint8, sampling={args.sampling}, workers={args.workers}")
    it = iter(loader)
    for _ in range(5):  # warm-up: worker start, page cache
        next(it)
    samples, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        try:
            x, y = next(it)
        except StopIteration:
            break
        assert x.shape[1:] == (args.num_frames, 64, 44) and x.dtype == torch.uint8
        samples += x.shape[0]
    rate = samples / (time.perf_counter() - t0)
    print(f"batches: {samples // args.batch_size}, samples: {samples}")
    # CPU cost of one batch in this process (load-independent): what a core can sustain.
    cpu_keys = keys[: 20 * args.batch_size]
    c0 = time.process_time()
    for b in range(0, len(cpu_keys), args.batch_size):
        collate_train([ds[k] for k in cpu_keys[b : b + args.batch_size]])
    per_sample = (time.process_time() - c0) / len(cpu_keys)
    print(f"cpu: {per_sample * 1e6:.0f} us/sample in-process (~{1 / per_sample:.0f} samples/s per core)")
    print(f"loader: {rate:.0f} samples/s")
    return rate


if __name__ == "__main__":
    main()
