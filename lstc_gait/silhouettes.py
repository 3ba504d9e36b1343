"""``python -m lstc_gait.silhouettes input=VIDEO out=DIR [background=IMAGE]``: a static-camera video -> silhouette frames.

A folder of PNG frames (named by video frame) that ``prepare``, ``enroll`` and ``identify`` read, and a
``silhouettes.json`` summary. Library: :func:`lstc_gait.identify.video.extract_silhouettes`; see docs/identify.md.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="silhouettes", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point: compose ``conf/silhouettes.yaml``, run, one-line errors (exit 2)."""
    from lstc_gait.errors import run_command
    from lstc_gait.identify.commands import run_silhouettes

    run_command("silhouettes", lambda: run_silhouettes(cfg, Path.cwd()))


if __name__ == "__main__":
    main()
