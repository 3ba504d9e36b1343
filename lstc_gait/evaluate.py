"""``python -m lstc_gait.evaluate`` / ``lstc-gait-evaluate``: a test protocol on a checkpoint or embeddings.

- ``checkpoint=PATH [dataset=...] [protocol=...]``: the platform's checkpoints (EMA weights when
  present) or an original lstc-gait checkpoint; any dataset option and protocol.
- ``embeddings=FILE.npz protocol=casia_b|ou_mvlp|retrieval``: embeddings computed anywhere.

Writes the per-view tables (CSV + Markdown, each headed by protocol, distance, checkpoint, split and
the misses policy), prints them, and logs them to MLflow with ``tracking=mlflow``.
Library function: :func:`lstc_gait.pipelines.evaluate.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_hydra_main, run_job


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from lstc_gait.engine.device import resolve_device
    from lstc_gait.engine.runtime import configure_process
    from lstc_gait.pipelines.evaluate import evaluate

    def body() -> None:
        configure_process(resolve_device(str(cfg.device)))
        evaluate(cfg, Path.cwd())

    run_job("evaluate", body)


def main() -> None:
    """Compose ``conf/evaluate.yaml`` with the command line and evaluate.

    User errors (also those raised while Hydra sets up the run) end as one line and exit status 2.
    """
    run_hydra_main("evaluate", _hydra_main)


if __name__ == "__main__":
    main()
