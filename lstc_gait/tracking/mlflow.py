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

from lstc_gait.tracking.store import DEFAULT_EXPERIMENT, call_with_retry, how_to_view, open_store

log = logging.getLogger(__name__)
_retry = call_with_retry

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
ERROR_TAG = "error"  # a failed run's one-line reason
ERROR_ARTIFACT = "error.txt"  # ... and its traceback


def error_line(error: BaseException) -> str:
    """The one-line reason of a failure: ``Type: first line of the message``.

    Args:
        error: The exception.

    Returns:
        The line (at most 500 characters).
    """
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def error_report(error: BaseException) -> str:
    """The full text of a failure: the one-line reason, then the traceback.

    Args:
        error: The exception (with its ``__traceback__`` when it was raised).

    Returns:
        The text of ``error.txt``.
    """
    import traceback

    return error_line(error) + "\n\n" + "".join(traceback.format_exception(type(error), error, error.__traceback__))


def provenance_tags() -> dict[str, str]:
    """MLflow's standard source tags for runs made through a client (the fluent API sets them itself).

    ``mlflow.source.name`` (the command's script), ``mlflow.source.type`` (``LOCAL``),
    ``mlflow.user``, and ``mlflow.source.git.commit`` / ``mlflow.source.git.branch`` when the
    package is run from a git checkout.

    Returns:
        Tag name -> value.
    """
    import getpass
    import sys

    tags = {"mlflow.source.type": "LOCAL",
            "mlflow.source.name": os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "lstc_gait"}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except Exception:  # no user name in this environment (containers without passwd entries)
        pass
    tags.update(_git_tags())
    return tags


_GIT: dict[str, str] | None = None


def _git_tags() -> dict[str, str]:
    global _GIT
    if _GIT is None:
        import subprocess

        here = os.path.dirname(os.path.abspath(__file__))
        _GIT = {}
        for key, args in (("mlflow.source.git.commit", ["rev-parse", "HEAD"]),
                          ("mlflow.source.git.branch", ["rev-parse", "--abbrev-ref", "HEAD"])):
            try:
                out = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                break
            if out.returncode != 0 or not out.stdout.strip():
                break
            _GIT[key] = out.stdout.strip()
    return dict(_GIT)


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
        all_tags = {**provenance_tags(), **dict(tags or {})}
        self._logged_upto: dict[str, int] = {}  # metric -> last step a reopened run already holds
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
                for key in run.data.metrics:  # a resume repeats steps after its checkpoint: log them once
                    history = _retry(self.client.get_metric_history, run_id, key)
                    self._logged_upto[key] = max((m.step for m in history), default=-1)
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

        A reopened (resumed) run skips a metric at a step it already holds, so no step appears twice
        in a metric's history after a resume.

        Args:
            metrics: Name -> value.
            step: Training step (None: 0).
        """
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        step = int(step or 0)
        items = [Metric(k, float(v), ts, step) for k, v in metrics.items()
                 if step > self._logged_upto.get(k, -1)]
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
                  artifact_path: str = "tables", step: int | None = None) -> None:
        """Log a table as CSV + Markdown artifacts and as an MLflow table (``<artifact_path>/<name>.json``).

        MLflow appends the rows of a table logged again under the same name (each evaluation of a
        run), so with ``step`` the MLflow table gets a leading ``step`` column that tells the
        evaluations apart; the CSV and Markdown files are replaced by the latest.

        Args:
            df: The table (pandas DataFrame).
            name: Its file stem.
            files: Already written files to upload (None: written here to a temporary folder).
            header: Text above the Markdown table when written here.
            artifact_path: Artifact folder.
            step: The training step of the evaluation, or None (no ``step`` column).
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
        if step is not None:
            flat.insert(0, "step", int(step))
        _retry(self.client.log_table, self.run_id, data=flat, artifact_file=f"{artifact_path}/{name}.json")

    def record_error(self, error: BaseException) -> None:
        """Record why the run failed: tag ``error`` (one line) and artifact ``error.txt`` (traceback).

        Args:
            error: The exception that ended the run.
        """
        self.set_tags({ERROR_TAG: error_line(error)})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ERROR_ARTIFACT
            path.write_text(error_report(error), encoding="utf-8")
            self.log_artifact(path)

    def view_hint(self) -> str:
        """How to look at this run: the ``mlflow ui`` command of its store and its page's URL.

        Returns:
            Printable lines.
        """
        return how_to_view(self.uri, self.experiment_id, self.run_id, "run")

    def end(self, status: str = "FINISHED", error: BaseException | None = None) -> None:
        """Close the run (idempotent).

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.
            error: The exception that ended the run; recorded with :meth:`record_error` (a failure
                to record it is logged, the run is closed all the same).

        Raises:
            ValueError: Another status.
        """
        if self._ended:
            return
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"run status must be one of {TERMINAL_STATUSES}, got {status!r}")
        if error is not None:
            try:
                self.record_error(error)
            except Exception as exc:  # the store may be what failed; still try to close the run
                log.error("could not record the error of MLflow run %s: %s", self.run_id, exc)
        _retry(self.client.set_terminated, self.run_id, status)
        self._ended = True
