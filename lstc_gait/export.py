"""``python -m lstc_gait.export checkpoint=PATH`` / ``lstc-gait-export``: TorchScript (+ ONNX) with a parity check.

Library function: :func:`lstc_gait.pipelines.export.export`; export mechanics: :mod:`lstc_gait.exporting`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_command


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Compose ``conf/export.yaml`` with the command line and export.

    Args:
        cfg: The composed config (given by Hydra).
    """
    from lstc_gait.pipelines.export import export

    run_command("export", lambda: export(cfg, Path.cwd()))


if __name__ == "__main__":
    main()
