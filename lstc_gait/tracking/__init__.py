"""Experiment tracking: MLflow run lifecycle (:mod:`.mlflow`), sweep parent runs (:mod:`.sweep`),
reports (:mod:`.report`). Importing this package does not import mlflow."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class NullTracker:
    """The tracker of ``tracking=none``: same interface as MLflowTracker, records nothing."""

    run_id: str | None = None

    def __init__(self, **kwargs: Any) -> None:  # accepts the tracking node's keys and ignores them
        self.settings = dict(kwargs)

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        pass

    def log_table(self, df: Any, name: str, files: tuple[Path, ...] | None = None, header: str | None = None,
                  artifact_path: str = "tables") -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


__all__ = ["NullTracker"]
