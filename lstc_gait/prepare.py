"""``python -m lstc_gait.prepare dataset=casia_b dataset.root=RAW dataset.cache_dir=CACHE`` / ``lstc-gait-prepare``.

Pretreats a raw silhouette dataset into the project's cache (resumable: run it again after an
interruption). With the default ``dataset=synthetic`` it generates and prepares SynthGait.
Library function: :func:`lstc_gait.pipelines.prepare.prepare`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_command


@hydra.main(config_path="conf", config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Compose ``conf/prepare.yaml`` with the command line and prepare the cache.

    Args:
        cfg: The composed config (given by Hydra).
    """
    from lstc_gait.data.selection import data_errors
    from lstc_gait.pipelines.prepare import prepare

    run_command("prepare", lambda: prepare(cfg, Path.cwd()), also=data_errors())


if __name__ == "__main__":
    main()
