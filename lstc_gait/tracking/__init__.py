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
        """Ignore params.

        Args:
            params: Ignored.
        """
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Ignore metrics.

        Args:
            metrics: Ignored.
            step: Ignored.
        """
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Ignore tags.

        Args:
            tags: Ignored.
        """
        pass

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Ignore a file.

        Args:
            path: Ignored.
            artifact_path: Ignored.
        """
        pass

    def log_table(self, df: Any, name: str, files: tuple[Path, ...] | None = None, header: str | None = None,
                  artifact_path: str = "tables", step: int | None = None) -> None:
        """Ignore a table.

        Args:
            df: Ignored.
            name: Ignored.
            files: Ignored.
            header: Ignored.
            artifact_path: Ignored.
            step: Ignored.
        """
        pass

    def view_hint(self) -> None:
        """Nothing to look at.

        Returns:
            None.
        """
        return None

    def end(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """Nothing to close.

        Args:
            status: Ignored.
            error: Ignored.
        """
        pass


__all__ = ["NullTracker"]
