"""MLflow run lifecycle for one training job (mlflow itself is imported lazily, only here).

The embedded default store is ``sqlite:///<output_dir>/mlflow.db`` with artifacts in
``<output_dir>/mlartifacts`` (MLflow 3 refuses plain file stores); ``tracking.uri`` or
``$MLFLOW_TRACKING_URI`` points it anywhere else (a server, Postgres, another SQLite file).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "lstc_gait"
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def resolve_tracking_uri(uri: str | None = None, output_dir: str | os.PathLike = "outputs") -> str:
    """Explicit ``uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<abs output_dir>/mlflow.db``.

    Relative SQLite paths are made absolute against the current directory, so spawned or launched
    processes reach the same file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return "sqlite:///" + str((Path(output_dir) / "mlflow.db").absolute())
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + str(Path(path).absolute())
    return uri


def default_artifact_location(uri: str) -> str | None:
    """``<store dir>/mlartifacts`` (file URI) for a local SQLite store; None lets the server decide."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return (Path(path).absolute().parent / "mlartifacts").as_uri()
    return None


def ensure_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _retry(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Retry while SQLite is locked by a concurrent sweep job (the sweep module owns the policy)."""
    from lstc_gait.tracking.sweep import call_with_retry

    return call_with_retry(fn, *args, **kwargs)


def ensure_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created when missing; on a local SQLite store its artifacts go to
    ``<store dir>/mlartifacts`` (not ./mlruns). Tolerates a concurrent creator and restores a deleted one."""
    exp = _retry(client.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            _retry(client.restore_experiment, exp.experiment_id)
        return str(exp.experiment_id)
    location = artifact_location or default_artifact_location(str(client.tracking_uri))
    try:
        return str(_retry(client.create_experiment, name, artifact_location=location))
    except Exception:
        exp = _retry(client.get_experiment_by_name, name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


class MLflowTracker:
    """One MLflow run: params, metrics, tables, artifacts, and its end status.

    ``run_id`` reopens an existing run (resume); ``parent_run_id`` makes this run a child (multirun)."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
                 parent_run_id: str | None = None, artifact_location: str | None = None, run_id: str | None = None,
                 tags: Mapping[str, str] | None = None, enabled: bool = True,
                 output_dir: str | os.PathLike = "outputs") -> None:
        if not enabled:
            raise ValueError("MLflowTracker with tracking.enabled=false: use tracking=none instead")
        import mlflow

        self.uri = resolve_tracking_uri(uri, output_dir)
        ensure_sqlite_dir(self.uri)
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.experiment_id = ensure_experiment(self.client, experiment, artifact_location)
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
        return str(_retry(self.client.get_run, self.run_id).info.artifact_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        flat = flatten(params)
        items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in sorted(flat.items())]
        existing = _retry(self.client.get_run, self.run_id).data.params
        items = [p for p in items if p.key not in existing]  # a resumed run keeps its params
        for i in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            _retry(self.client.log_batch, self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        if items:
            _retry(self.client.log_batch, self.run_id, tags=items)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        _retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_table(self, df: Any, name: str, files: tuple[Path, ...] | None = None, header: str | None = None,
                  artifact_path: str = "tables") -> None:
        """The table as CSV + Markdown artifacts (``files`` when already written, else written here) and as
        an MLflow table (``<artifact_path>/<name>.json``, shown in the UI's artifact/evaluation views)."""
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
        if self._ended:
            return
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"run status must be one of {TERMINAL_STATUSES}, got {status!r}")
        _retry(self.client.set_terminated, self.run_id, status)
        self._ended = True
