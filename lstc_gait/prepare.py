"""``python -m lstc_gait.prepare dataset=casia_b dataset.root=RAW dataset.cache_dir=CACHE`` / ``lstc-gait-prepare``.

Pretreats a raw silhouette dataset into the project's cache (resumable: run it again after an
interruption). With the default ``dataset=synthetic`` it generates and prepares SynthGait.
Library function: :func:`lstc_gait.pipelines.prepare.prepare`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_hydra_main, run_job


@hydra.main(config_path="conf", config_name="prepare", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from lstc_gait.pipelines.prepare import prepare

    run_job("prepare", lambda: prepare(cfg, Path.cwd()))


def main() -> None:
    """Compose ``conf/prepare.yaml`` with the command line and prepare the cache.

    User errors (also those raised while Hydra sets up the run) end as one line and exit status 2.
    """
    run_hydra_main("prepare", _hydra_main)


if __name__ == "__main__":
    main()
