"""Embed whole test sequences with a model, in dataset order.

Batches hold sequences of similar length (sorted by length) so zero padding stays small; the
model sees the true lengths, so any batch size gives the same embeddings up to float rounding.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

_AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
               "float16": torch.float16, "16": torch.float16}


def _sequence_lengths(dataset: Dataset) -> np.ndarray | None:
    """Frame counts without loading frames: ``dataset.lengths`` or cache index ``num_frames``."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        cache, rows = getattr(dataset, "cache", None), getattr(dataset, "rows", None)
        index = getattr(cache, "index", None)
        if index is None or rows is None or "num_frames" not in getattr(index, "columns", ()):
            return None
        lengths = index["num_frames"].to_numpy()[np.asarray(rows, dtype=np.int64)]
    lengths = np.asarray(lengths, dtype=np.int64)
    cap = getattr(dataset, "max_frames", None)
    if cap is not None:
        lengths = np.minimum(lengths, int(cap))
    return lengths if len(lengths) == len(dataset) else None


def length_sorted_batches(lengths: np.ndarray | None, n: int, batch_size: int) -> list[list[int]]:
    """Index batches of similar lengths (longest first, stable), covering 0..n-1 once."""
    order = np.arange(n) if lengths is None else np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


def _autocast(device: torch.device, amp):
    if amp in (False, None, "", "none", "no", "fp32", "float32"):
        return contextlib.nullcontext()
    if amp is True:
        dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    elif str(amp).lower() in _AMP_DTYPES:
        dtype = _AMP_DTYPES[str(amp).lower()]
    else:
        raise ValueError(f"amp must be False, True, 'bf16' or 'fp16', got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=dtype)


def extract_embeddings(model: torch.nn.Module, dataset: Dataset, batch_size: int = 16,
                       device: str | torch.device = "cpu", amp=False, num_workers: int = 0,
                       progress: bool = True, collate_fn=None) -> np.ndarray:
    """Run ``model`` over every sequence of ``dataset``; returns float32 (N, D) in dataset order.

    ``dataset`` items are ``(uint8 tensor (T, H, W), position)``; batches come from
    ``collate_fn`` (default ``lstc_gait.data.datasets.collate_padded``) as
    ``(x uint8 (N, Tmax, H, W), lengths, positions)``. The model gets ``x[:, None] / 255`` on
    ``device`` and ``lengths``, and must return a dict with ``"embedding"`` (N, ...); part embeddings
    (N, D, P) are kept 3-D (the protocols average per-part distances), others are flattened to 2-D. ``amp`` runs the forward under autocast (bf16 / fp16);
    the returned embeddings are always float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    if collate_fn is None:
        from lstc_gait.data.datasets import collate_padded as collate_fn
    device = torch.device(device)
    batches = length_sorted_batches(_sequence_lengths(dataset), n, batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    out: np.ndarray | None = None
    filled = np.zeros(n, dtype=bool)
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="embed", unit="seq", file=sys.stderr, leave=False)
    try:
        with torch.inference_mode():
            for x, lengths, positions in loader:
                x = x.to(device, non_blocking=True)[:, None].float().div_(255)
                with _autocast(device, amp):
                    result = model(x, lengths=lengths.to(device))
                if not isinstance(result, dict) or "embedding" not in result:
                    raise TypeError("model(x, lengths=...) must return a dict with an 'embedding' entry")
                emb = result["embedding"].float()
                if emb.dim() != 3:  # (N, D, P) part embeddings stay 3-D: compared part by part
                    emb = emb.reshape(len(positions), -1)
                emb = emb.cpu().numpy()
                if out is None:
                    out = np.empty((n, *emb.shape[1:]), dtype=np.float32)
                pos = positions.numpy()
                out[pos] = emb
                filled[pos] = True
                if bar is not None:
                    bar.update(len(pos))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    if not filled.all():
        raise RuntimeError(f"extract_embeddings: {int((~filled).sum())} sequences were never embedded "
                           "(the dataset must return its position as the second item)")
    return out
