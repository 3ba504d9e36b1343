"""``python -m lstc_gait.identify`` (this package's ``__main__``): ``python -m lstc_gait.identify gallery=DIR input=PATH out=CSV [checkpoint=CKPT] [top_k=5] [threshold=auto|FLOAT] [far=0.01]``.

Ranks the enrolled subjects for each probe (video, mask video, frames folder, or CSV ``path``), prints
the table and writes ``probe, rank, subject, distance, accepted``. Library:
:func:`lstc_gait.identify.pipeline.identify`; see docs/identify.md.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="identify", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point: compose ``conf/identify.yaml``, run, one-line errors (exit 2)."""
    from lstc_gait.errors import run_command
    from lstc_gait.identify.commands import run_identify

    run_command("identify", lambda: run_identify(cfg, Path.cwd()))


if __name__ == "__main__":
    main()
