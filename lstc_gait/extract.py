"""``python -m lstc_gait.extract checkpoint=PATH [dataset=...] [split=test] out=FILE.npz`` / ``lstc-gait-extract``.

Embeds the split's sequences and writes embeddings, subjects, types, views, seqs and a JSON ``meta``
(checkpoint, weights, dataset, split, protocol) to one ``.npz`` that ``python -m lstc_gait.evaluate
embeddings=FILE.npz`` or any other tool reads. Library function: :func:`lstc_gait.pipelines.extract.extract`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_hydra_main, run_job


@hydra.main(config_path="conf", config_name="extract", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from lstc_gait.engine.device import resolve_device
    from lstc_gait.engine.runtime import configure_process
    from lstc_gait.pipelines.extract import extract

    def body() -> None:
        configure_process(resolve_device(str(cfg.device)))
        extract(cfg, Path.cwd())

    run_job("extract", body)


def main() -> None:
    """Compose ``conf/extract.yaml`` with the command line and extract.

    User errors (also those raised while Hydra sets up the run) end as one line and exit status 2.
    """
    run_hydra_main("extract", _hydra_main)


if __name__ == "__main__":
    main()
