"""``python -m lstc_gait.prepare dataset=casia_b dataset.root=RAW dataset.cache_dir=CACHE``

Pretreats a raw silhouette dataset into the project's cache (resumable: run it again after an
interruption). With the default ``dataset=synthetic`` it generates and prepares SynthGait.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lstc_gait.prepare")


def _absolute(path: str | None) -> str | None:
    return None if path in (None, "") else to_absolute_path(path)


def run(cfg: DictConfig) -> Path:
    from lstc_gait.data.cache import open_cache
    from lstc_gait.data.config import dataset_config_from, default_cache_dir, resolve_cache
    from lstc_gait.data.prepare import prepare_cache

    ds = dataset_config_from(cfg.dataset)
    data_dir = Path(to_absolute_path(str(cfg.data_dir)))
    progress = bool(cfg.get("progress", True))
    ds.root = _absolute(ds.root)
    ds.roots = [to_absolute_path(r) for r in ds.roots]
    ds.cache_dir = _absolute(ds.cache_dir)
    ds.partition_file = _absolute(ds.partition_file)
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


@hydra.main(config_path="conf", config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (FileNotFoundError, ValueError) as exc:
        # Bad paths or config: one clear line, not a stack trace.
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
        sys.exit(2)


if __name__ == "__main__":
    main()
