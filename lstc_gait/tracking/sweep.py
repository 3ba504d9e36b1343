"""One MLflow parent run per Hydra multirun; every job of the sweep is its child.

``SweepParentCallback`` is registered in ``conf/config.yaml`` as ``hydra.callbacks.mlflow_sweep``.
In the launching process it opens the parent run before any job starts (which also creates the
store and runs its migrations once, so concurrent jobs never migrate a SQLite file at the same
time), writes the parent run id atomically to ``<sweep_dir>/.mlflow_parent_run`` and exports it
in the environment. Jobs, in whatever process or machine the launcher puts them, find it with
``parent_run_id(sweep_dir)``. When the sweep ends (or the launching process exits after a job
failed, because Hydra then skips ``on_multirun_end``) the callback pulls the children with
``mlflow.search_runs`` and logs the comparison table (CSV, Markdown, MLflow table) and a PNG plot
of the headline metric to the parent, then prints how to open the sweep in the MLflow UI.

A parent that cannot be opened or finished is an error, not a warning: Hydra turns exceptions of
callbacks into warnings, so the callback prints the reason and exits with status 1 (before any job
starts, or after the sweep) instead of letting jobs land as unrelated top-level runs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lstc_gait.tracking.store import (
    DEFAULT_EXPERIMENT,
    call_with_retry,
    how_to_view,
    open_store,
    resolve_tracking_uri,
)
from lstc_gait.utils.fileio import atomic_write_text

log = logging.getLogger(__name__)

PARENT_FILE = ".mlflow_parent_run"
SWEPT_FILE = ".mlflow_swept_keys"  # JSON list of the override keys the sweep varies (names its jobs)
ENV_PARENT_RUN_ID = "LSTC_GAIT_SWEEP_PARENT_RUN_ID"
ENV_SWEEP_DIR = "LSTC_GAIT_SWEEP_DIR"


class SweepTrackingError(RuntimeError):
    """The sweep's MLflow parent run could not be opened or finished (its jobs would be lost)."""


def _fail(message: str) -> None:
    """Print ``message`` and exit 1: Hydra would turn an exception of a callback into a warning."""
    import sys

    print(f"lstc_gait.train: error: {message}", file=sys.stderr, flush=True)
    log.error(message)
    raise SystemExit(1)


def write_swept_keys(sweep_dir: str | os.PathLike, keys: list[str]) -> Path:
    """Atomically record the keys a sweep varies in its folder (its jobs are named by them).

    Args:
        sweep_dir: The multirun's sweep folder.
        keys: The swept override keys.

    Returns:
        The file written.
    """
    return atomic_write_text(Path(sweep_dir) / SWEPT_FILE, json.dumps(list(keys)) + "\n")


def swept_keys_of(sweep_dir: str | os.PathLike | None) -> list[str] | None:
    """The keys the sweep writing to ``sweep_dir`` varies, as its callback recorded them.

    Args:
        sweep_dir: The multirun's sweep folder.

    Returns:
        The keys, or None when not recorded (no tracked sweep there).
    """
    if sweep_dir is None:
        return None
    try:
        keys = json.loads((Path(sweep_dir) / SWEPT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [str(k) for k in keys] if isinstance(keys, list) else None


def _same_dir(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b))


def write_parent_run_id(sweep_dir: str | os.PathLike, run_id: str) -> Path:
    """Atomically record the parent run id in the sweep dir (readers never see a partial file).

    Args:
        sweep_dir: The multirun's sweep folder.
        run_id: The parent run's id.

    Returns:
        The file written.
    """
    return atomic_write_text(Path(sweep_dir) / PARENT_FILE, run_id + "\n")


def parent_run_id(sweep_dir: str | os.PathLike | None) -> str | None:
    """The MLflow parent run id of the sweep writing to ``sweep_dir``, or None outside a tracked sweep.

    The file in the sweep dir wins (it is exact per sweep and reaches other processes and hosts on a
    shared filesystem); the environment variables are the fallback and count only when they name the
    same sweep dir, so a stale export from an earlier sweep in the same process is never picked up.

    Args:
        sweep_dir: The multirun's sweep folder (None: the environment only).

    Returns:
        The parent run id, or None.
    """
    if sweep_dir is not None:
        path = Path(sweep_dir) / PARENT_FILE
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            log.warning("cannot read sweep parent run id from %s: %s", path, exc)
            text = ""
        if text:
            return text
    env_id = os.environ.get(ENV_PARENT_RUN_ID, "").strip()
    env_dir = os.environ.get(ENV_SWEEP_DIR, "")
    if env_id and (sweep_dir is None or (env_dir and _same_dir(env_dir, sweep_dir))):
        return env_id
    return None


# ------------------------------------------------------------------------------------------ config access


def tracking_settings(config: DictConfig) -> tuple[bool, str, str, str | None]:
    """The tracking settings exactly as this config's jobs resolve them.

    Args:
        config: A composed training config.

    Returns:
        (enabled, tracking URI, experiment name, artifact location).
    """
    node = OmegaConf.select(config, "tracking", default=None)
    if node is None:
        return False, "", "", None
    enabled = OmegaConf.select(node, "enabled", default=None)
    if enabled is None:
        enabled = OmegaConf.select(node, "_target_", default=None) is not None or "uri" in node
    output_dir = OmegaConf.select(config, "paths.output_dir", default="outputs") or "outputs"
    uri = resolve_tracking_uri(OmegaConf.select(node, "uri", default=None), output_dir)
    name = (OmegaConf.select(node, "experiment", default=None)
            or OmegaConf.select(node, "experiment_name", default=None) or DEFAULT_EXPERIMENT)
    location = OmegaConf.select(node, "artifact_location", default=None)
    return bool(enabled), uri, str(name), location


def swept_keys(config: DictConfig) -> list[str]:
    """Override keys this multirun sweeps: ``hydra.sweeper.params`` plus comma/range command-line ones.

    Args:
        config: The sweep's composed config (with ``hydra``).

    Returns:
        The keys, presets' first.
    """
    keys: list[str] = []
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    if params:
        keys.extend(str(k) for k in params.keys())
    for item in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []:
        key, _, value = str(item).partition("=")
        key = key.strip().lstrip("+~")
        sweeping = ("," in value and not value.strip().startswith(("[", "{", "'", '"'))) or \
            any(value.strip().startswith(f) for f in ("range(", "choice(", "interval(", "glob("))
        if sweeping and key not in keys:
            keys.append(key)
    return keys


# ------------------------------------------------------------------------------------------ the callback


class SweepParentCallback(Callback):
    """Hydra callback: MLflow parent run per multirun, comparison table when the sweep ends.

    Args:
        headline: The comparison column plotted and sorted by (None: the headline ``mean rank-1``).
        plot: Write the PNG plot.
    """

    def __init__(self, headline: str | None = None, plot: bool = True) -> None:
        self.headline = headline
        self.plot = plot
        self._state: dict[str, Any] | None = None

    # Hydra calls this in the launching process, before the launcher starts any job.
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the sweep's parent run before any job starts (launching process).

        Args:
            config: The sweep's composed config (with ``hydra``).
            **kwargs: Hydra's extra arguments.
        """
        enabled, uri, experiment, artifact_location = tracking_settings(config)
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir", default="multirun"))
        if not enabled:
            log.info("tracking disabled: no MLflow parent run for this sweep")
            return
        try:
            self._open_parent(config, uri, experiment, artifact_location, sweep_dir)
        except Exception as exc:  # without a parent the jobs would land as unrelated runs: stop here
            _fail(f"could not open the MLflow parent run of this sweep in {uri}: {type(exc).__name__}: {exc}; "
                  "no job was started")

    def _open_parent(self, config: DictConfig, uri: str, experiment: str, artifact_location: str | None,
                     sweep_dir: str) -> None:
        from lstc_gait.tracking.mlflow import provenance_tags
        from lstc_gait.tracking.names import sweep_run_name

        store = open_store(uri)
        client = store.client
        exp_id = store.experiment(experiment, artifact_location)
        keys = swept_keys(config)
        task = [str(o) for o in (OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])]
        tags = {
            **provenance_tags(),
            "lstc_gait.sweep_role": "parent",
            "lstc_gait.sweep_dir": os.path.abspath(sweep_dir),
            "lstc_gait.sweep_overrides": json.dumps(keys),
            "lstc_gait.command_overrides": " ".join(task)[:4500],
        }
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        params_dict = OmegaConf.to_container(params) if params else {}
        if params:
            tags["lstc_gait.sweeper_params"] = json.dumps(params_dict)[:4500]
        run_name = sweep_run_name(task, {str(k): str(v) for k, v in params_dict.items()})  # type: ignore[union-attr]
        run = call_with_retry(client.create_run, exp_id, run_name=run_name[:250], tags=tags)
        run_id = run.info.run_id
        write_swept_keys(sweep_dir, keys)
        write_parent_run_id(sweep_dir, run_id)
        os.environ[ENV_PARENT_RUN_ID] = run_id
        os.environ[ENV_SWEEP_DIR] = os.path.abspath(sweep_dir)
        self._state = {"uri": store.uri, "run_id": run_id, "experiment_id": exp_id, "keys": keys,
                       "sweep_dir": os.path.abspath(sweep_dir), "done": False}
        # Hydra skips on_multirun_end when a job failed (the sweeper re-raises its error); the parent
        # must still get its table, so finalise at interpreter exit as well (idempotent).
        atexit.register(self._finalize)
        log.info("MLflow sweep parent run %s (%s, experiment %s)", run_id, uri, experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the comparison to the parent run and close it; exit 1 when that fails.

        Args:
            config: The sweep's composed config.
            **kwargs: Hydra's extra arguments.
        """
        error = self._finalize()
        if error is not None:
            _fail(error)

    # Hydra calls this in the job's own process after the task returned or raised.
    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Give a failed job that never opened its MLflow run (crash at start-up) a FAILED child run.

        The sweep's table then shows it, with the reason in its ``error`` tag and ``error.txt``.

        Args:
            config: The job's composed config.
            job_return: Hydra's record of the job (status, return value or exception).
            **kwargs: Hydra's extra arguments.
        """
        from hydra.core.utils import JobStatus

        if getattr(job_return, "status", None) != JobStatus.FAILED:
            return
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        parent = parent_run_id(sweep_dir) if sweep_dir else None
        if not parent:
            return
        try:
            enabled, uri, _, _ = tracking_settings(config)
            if enabled:
                record_failed_job(uri, parent, config, getattr(job_return, "_return_value", None))
        except Exception as exc:  # the job has failed already; Hydra reports its own error
            log.error("could not record the failed job in MLflow: %s", exc)

    def _finalize(self) -> str | None:
        """Finish the parent once; returns the error message when that failed."""
        state = self._state
        if not state or state["done"]:
            return None
        state["done"] = True
        try:
            finalize_parent(state["uri"], state["run_id"], state["sweep_dir"], swept=state["keys"] or None,
                            headline=self.headline, plot=self.plot)
            return None
        except Exception as exc:
            message = (f"could not write the sweep comparison to MLflow parent run {state['run_id']} in "
                       f"{state['uri']}: {type(exc).__name__}: {exc}")
            log.error(message)
            return message
        finally:
            if os.environ.get(ENV_PARENT_RUN_ID) == state["run_id"]:
                os.environ.pop(ENV_PARENT_RUN_ID, None)
                os.environ.pop(ENV_SWEEP_DIR, None)


def record_failed_job(uri: str, parent: str, config: DictConfig, error: BaseException | None) -> str | None:
    """Create a FAILED child run for a job whose own run does not exist (matched by its run dir tag).

    Args:
        uri: The tracking URI.
        parent: The sweep's parent run id.
        config: The job's composed config (with ``hydra``).
        error: The job's exception (None: unknown).

    Returns:
        The new run id, or None when the job had opened its run.
    """
    from lstc_gait.tracking.mlflow import ERROR_ARTIFACT, ERROR_TAG, error_line, error_report, provenance_tags
    from lstc_gait.tracking.names import job_run_name

    client = open_store(uri).client
    run_dir = os.path.abspath(str(OmegaConf.select(config, "hydra.runtime.output_dir", default="") or ""))
    parent_run = call_with_retry(client.get_run, parent)
    exp_id = parent_run.info.experiment_id
    found = call_with_retry(client.search_runs, [exp_id],
                            f"tags.mlflow.parentRunId = '{parent}' and tags.`lstc_gait.run_dir` = '{run_dir}'")
    if found:
        return None
    overrides = [str(o) for o in (OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])]
    from lstc_gait.tracking.report import OVERRIDES_TAG

    as_dict = {o.partition("=")[0].strip().lstrip("+~"): o.partition("=")[2].strip() for o in overrides}
    sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
    tags = {**provenance_tags(), "mlflow.parentRunId": parent, "lstc_gait.overrides": " ".join(overrides),
            OVERRIDES_TAG: json.dumps(as_dict), "lstc_gait.run_dir": run_dir,
            ERROR_TAG: error_line(error) if error is not None else "the job failed before it opened its run"}
    run = call_with_retry(client.create_run, exp_id, run_name=job_run_name(as_dict, swept_keys_of(sweep_dir) or []),
                          tags=tags)
    if error is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ERROR_ARTIFACT
            path.write_text(error_report(error), encoding="utf-8")
            call_with_retry(client.log_artifact, run.info.run_id, str(path))
    call_with_retry(client.set_terminated, run.info.run_id, "FAILED")
    return run.info.run_id


def finalize_parent(uri: str, run_id: str, sweep_dir: str | os.PathLike, swept: list[str] | None = None,
                    headline: str | None = None, plot: bool = True) -> dict[str, Any]:
    """Pull the children of ``run_id``, write the comparison and close the parent.

    The comparison (sorted by the headline, best first) goes to the sweep dir, the parent's
    artifacts, an MLflow table and a PNG; the parent ends FINISHED, or FAILED when a child failed or
    none ran. Children still RUNNING here belong to jobs that died without closing their run (the
    launcher has returned), so they are marked FAILED first. Ends by printing the table and how to
    open the sweep in the MLflow UI.

    Args:
        uri: The tracking URI.
        run_id: The parent run id.
        sweep_dir: The sweep folder (gets ``comparison.csv/.md/.png``).
        swept: The override keys shown (None: those that differ between jobs).
        headline: The column plotted and sorted by (None: :data:`lstc_gait.tracking.report.HEADLINE`).
        plot: Write the PNG.

    Returns:
        A summary: ``jobs``, ``failed``, ``status`` and the files ``csv``, ``md``, ``png``.
    """
    from lstc_gait.tracking import report

    client = open_store(uri).client
    parent = call_with_retry(client.get_run, run_id)
    children = report.load_child_runs(client, run_id, [parent.info.experiment_id])
    if len(children):
        stale = children["status"].isin(["RUNNING", "SCHEDULED"])
        for child_id in children.loc[stale, "run_id"]:
            call_with_retry(client.set_tag, child_id, "lstc_gait.note", "job ended without closing its run")
            call_with_retry(client.set_terminated, child_id, "FAILED")
        children.loc[stale, "status"] = "FAILED"

    metric = headline or report.HEADLINE
    table = report.build_comparison(children, swept=swept, sort_by=metric)
    out_dir = Path(sweep_dir)
    title = f"{parent.info.run_name or run_id} ({run_id}): {len(table)} jobs"
    csv_path, md_path = report.write_comparison(table, out_dir, "comparison", title=title)
    for path in (csv_path, md_path):
        call_with_retry(client.log_artifact, run_id, str(path), "comparison")
    if len(table):
        call_with_retry(client.log_table, run_id, data=table, artifact_file="comparison/comparison_table.json")
    png = report.plot_comparison(table, out_dir / "comparison.png", metric=metric) if plot else None
    if png is not None:
        call_with_retry(client.log_artifact, run_id, str(png), "comparison")

    n_failed = int((table["status"] != "FINISHED").sum()) if len(table) else 0
    call_with_retry(client.log_metric, run_id, "sweep/jobs", float(len(table)))
    call_with_retry(client.log_metric, run_id, "sweep/failed_jobs", float(n_failed))
    if len(table) and metric in table.columns and table[metric].notna().any():
        best = table.loc[table[metric].idxmax()]
        call_with_retry(client.log_metric, run_id, f"sweep/best {metric}", float(best[metric]))
        if metric == report.HEADLINE:  # the parent's row in the UI shows its best child's headline
            call_with_retry(client.log_metric, run_id, report.HEADLINE_METRIC, float(best[metric]))
        call_with_retry(client.set_tag, run_id, "lstc_gait.best_run", str(best["run_id"]))
    status = "FINISHED" if len(table) and n_failed == 0 else "FAILED"
    call_with_retry(client.set_terminated, run_id, status)
    print(report.format_markdown(table, title), flush=True)
    print(how_to_view(uri, parent.info.experiment_id, run_id, "sweep"), flush=True)
    return {"jobs": len(table), "failed": n_failed, "status": status, "csv": csv_path, "md": md_path,
            "png": png}


__all__ = ["ENV_PARENT_RUN_ID", "ENV_SWEEP_DIR", "PARENT_FILE", "SWEPT_FILE", "SweepParentCallback",
           "SweepTrackingError", "call_with_retry", "finalize_parent", "parent_run_id", "record_failed_job",
           "resolve_tracking_uri", "swept_keys", "swept_keys_of", "tracking_settings", "write_parent_run_id",
           "write_swept_keys"]
