"""The run tracker: one MLflow run's params, metrics, tables, artifacts and end status.

The store and experiment come from :mod:`lstc_gait.tracking.store` (set up there, once); this
module never sets MLflow's process-wide tracking URI. mlflow is imported lazily.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lstc_gait.tracking.store import DEFAULT_EXPERIMENT, call_with_retry, open_store

log = logging.getLogger(__name__)
_retry = call_with_retry

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (``{"a": {"b": 1}} -> {"a.b": 1}``); lists stay values.

    Args:
        d: The nested mapping.
        prefix: Key prefix of this level.

    Returns:
        The flat dict.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


class MLflowTracker:
    """One MLflow run: params, metrics, tables, artifacts, and its end status (the one tracker object).

    Args:
        uri: ``tracking.uri`` (None: ``$MLFLOW_TRACKING_URI``, else ``<output_dir>/mlflow.db``).
        experiment: Experiment name (created when missing).
        run_name: The run's name.
        parent_run_id: Makes this run a child (a multirun job).
        artifact_location: Artifact root of a new experiment (None: the store's default).
        run_id: Reopen this run (resume) when it exists.
        tags: Tags set on the run.
        enabled: Must be true (``tracking=none`` uses :class:`lstc_gait.tracking.NullTracker`).
        output_dir: ``paths.output_dir``.

    Raises:
        ValueError: ``enabled`` is false.
    """

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
                 parent_run_id: str | None = None, artifact_location: str | None = None, run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, enabled: bool = True,
                 output_dir: str | os.PathLike = "outputs") -> None:
        if not enabled:
            raise ValueError("MLflowTracker with tracking.enabled=false: use tracking=none instead")
        store = open_store(uri, output_dir)
        self.uri = store.uri
        self.client = store.client
        self.experiment_id = store.experiment(experiment, artifact_location)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is not None:
            try:
                run = _retry(self.client.get_run, run_id)
            except Exception as exc:
                log.warning("cannot reopen MLflow run %s (%s); starting a new run", run_id, exc)
                run = None
            if run is not None:
                _retry(self.client.update_run, run_id, status="RUNNING")
                self.run_id = run_id
                self.set_tags(all_tags)
                self._ended = False
                return
        run = _retry(self.client.create_run, self.experiment_id, run_name=(run_name or "default")[:250],
                     tags=all_tags)
        self.run_id = run.info.run_id
        self._ended = False

    @property
    def artifact_uri(self) -> str:
        """The run's artifact root URI."""
        return str(_retry(self.client.get_run, self.run_id).info.artifact_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as flat params; a reopened run keeps the params it has.

        Args:
            params: Nested mapping, flattened to dotted keys; values truncated to MLflow's limit.
        """
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        flat = flatten(params)
        items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in sorted(flat.items())]
        existing = _retry(self.client.get_run, self.run_id).data.params
        items = [p for p in items if p.key not in existing]  # a resumed run keeps its params
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at a step.

        Args:
            metrics: Name -> value.
            step: Training step (None: 0).
        """
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            _retry(self.client.log_batch, self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as strings, truncated to 5000 characters).

        Args:
            tags: Name -> value.
        """
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        if items:
            _retry(self.client.log_batch, self.run_id, tags=items)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file to the run's artifacts.

        Args:
            path: The file.
            artifact_path: Folder within the artifacts (None: the root).
        """
        _retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_table(self, df: Any, name: str, files: tuple[Path, ...] | None = None, header: str | None = None,
                  artifact_path: str = "tables") -> None:
        """Log a table as CSV + Markdown artifacts and as an MLflow table (``<artifact_path>/<name>.json``).

        Args:
            df: The table (pandas DataFrame).
            name: Its file stem.
            files: Already written files to upload (None: written here to a temporary folder).
            header: Text above the Markdown table when written here.
            artifact_path: Artifact folder.
        """
        if files is None:
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / f"{name}.csv"
                md = Path(tmp) / f"{name}.md"
                df.to_csv(csv)
                text = df.to_markdown(floatfmt=".2f")
                md.write_text((f"{header}\n\n" if header else "") + text + "\n", encoding="utf-8")
                for f in (csv, md):
                    self.log_artifact(f, artifact_path)
        else:
            for f in files:
                self.log_artifact(f, artifact_path)
        flat = df.reset_index()
        flat.columns = [str(c) for c in flat.columns]
        _retry(self.client.log_table, self.run_id, data=flat, artifact_file=f"{artifact_path}/{name}.json")

    def end(self, status: str = "FINISHED") -> None:
        """Close the run (idempotent).

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.

        Raises:
            ValueError: Another status.
        """
        if self._ended:
            return
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"run status must be one of {TERMINAL_STATUSES}, got {status!r}")
        _retry(self.client.set_terminated, self.run_id, status)
        self._ended = True
