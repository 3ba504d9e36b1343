"""Prepare job: pretreat a raw silhouette dataset into the cache, or generate and prepare SynthGait."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lstc_gait.utils.paths import resolve_path

log = logging.getLogger("lstc_gait.prepare")


def prepare(cfg: DictConfig, base_dir: Path) -> Path:
    """Make the cache of the ``prepare`` config's dataset ready (resumable: run again after an interruption).

    Args:
        cfg: The composed ``conf/prepare.yaml`` (``dataset``, ``data_dir``, ``progress``).
        base_dir: The launch folder (relative paths start here).

    Returns:
        The cache folder.

    Raises:
        DatasetConfigError: An invalid dataset config.
        FileNotFoundError: A raw root that does not exist.
    """
    from omegaconf import OmegaConf

    from lstc_gait.data.cache import open_cache
    from lstc_gait.data.config import default_cache_dir, resolve_cache
    from lstc_gait.data.prepare import prepare_cache
    from lstc_gait.data.selection import dataset_settings

    ds = dataset_settings(OmegaConf.to_container(cfg.dataset, resolve=True), base_dir)
    data_dir = resolve_path(str(cfg.data_dir), base_dir)
    progress = bool(cfg.get("progress", True))
    if ds.synthetic is not None:
        cache_dir = resolve_cache(ds, data_dir, progress=progress)
    else:
        cache_dir = Path(ds.cache_dir) if ds.cache_dir else default_cache_dir(ds, data_dir)
        # Always run the (resumable) job here, so new or fixed raw data is picked up.
        prepare_cache(ds.all_roots(), ds.layout, cache_dir, workers=ds.workers, min_frames=ds.min_frames,
                      progress=progress)
    cache = open_cache(cache_dir)
    log.info("cache ready: %s (%d sequences, %d frames)", cache_dir, len(cache), cache.total_frames)
    print(f"cache: {cache_dir} ({len(cache)} sequences, {cache.total_frames} frames)")
    return cache_dir


__all__ = ["prepare"]
