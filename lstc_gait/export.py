"""``python -m lstc_gait.export checkpoint=PATH`` / ``lstc-gait-export``: TorchScript (+ ONNX) with a parity check.

Library function: :func:`lstc_gait.pipelines.export.export`; export mechanics: :mod:`lstc_gait.exporting`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_hydra_main, run_job


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from lstc_gait.pipelines.export import export

    run_job("export", lambda: export(cfg, Path.cwd()))


def main() -> None:
    """Compose ``conf/export.yaml`` with the command line and export.

    User errors (also those raised while Hydra sets up the run) end as one line and exit status 2.
    """
    run_hydra_main("export", _hydra_main)


if __name__ == "__main__":
    main()
