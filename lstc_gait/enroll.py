"""``python -m lstc_gait.enroll checkpoint=CKPT gallery=DIR input=PATH [subject=ID]``: add walkers to a gallery.

``PATH``: an RGB video, a video of masks, a folder of silhouette frames, or a CSV ``path,subject``.
Library: :func:`lstc_gait.identify.pipeline.enroll`; see docs/identify.md.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="enroll", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point: compose ``conf/enroll.yaml``, run, one-line errors (exit 2)."""
    from lstc_gait.errors import run_command
    from lstc_gait.identify.commands import run_enroll

    run_command("enroll", lambda: run_enroll(cfg, Path.cwd()))


if __name__ == "__main__":
    main()
