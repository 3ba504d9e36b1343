"""Sweep comparison tables built from MLflow runs.

The same code serves the sweep callback (at the end of a multirun) and ``python -m lstc_gait.report``
(any MLflow store, any time later): load the child runs of a sweep parent through an MLflow client
into pandas, reduce them to one row per job with the swept settings and the headline metrics, then
write CSV, Markdown and a PNG plot.

A job's overrides come from its structured tag ``lstc_gait.overrides_json`` (a JSON object
override key -> value, written by the training job); nothing here parses override strings.
``mlflow`` and ``matplotlib`` are imported lazily: this module is imported by the package's
entry points and must stay cheap. MLflow is reached through an explicit client
(:func:`lstc_gait.tracking.store.open_store`), never through its process-wide tracking URI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lstc_gait.tracking.names import BRANCH_CONFIG_WORDS, BRANCHES, branch_choice_in_words, branches_in_words
from lstc_gait.tracking.store import call_with_retry
from lstc_gait.utils.fileio import atomic_output, atomic_write_text

# Tag names written by the sweep callback on the parent run.
PARENT_ROLE_TAG = "lstc_gait.sweep_role"
PARENT_ROLE_VALUE = "parent"
SWEEP_DIR_TAG = "lstc_gait.sweep_dir"
SWEEP_OVERRIDES_TAG = "lstc_gait.sweep_overrides"

# Headline rank-1 metrics of the CASIA-B protocol, as logged by the trainer.
CONDITIONS = ("NM", "BG", "CL")
HEADLINE = "mean rank-1"  # the comparison column of a run's test/mean/rank1
HEADLINE_METRIC = "test/mean/rank1"  # logged by every run's evaluation (evaluation.evaluator.headline_rank1)

# The structured tag holding a job's overrides: a JSON object {override key: value text}.
OVERRIDES_TAG = "lstc_gait.overrides_json"
_BRANCH_TAGS = ("tags.lstc_gait.branches", "tags.branches", "tags.model.branches")
_JOB_NUM_TAGS = ("tags.lstc_gait.job_num", "tags.job_num", "tags.hydra.job.num")
_RUN_DIR_TAGS = ("tags.lstc_gait.run_dir",)
_BRANCH_OVERRIDE_KEYS = ("model/branches", "model.branches", "branches")


def overrides_of(row: pd.Series) -> dict[str, str]:
    """A job's overrides from its structured tag.

    Args:
        row: One run of ``search_runs`` output (``tags.lstc_gait.overrides_json`` holds a JSON object).

    Returns:
        Override key -> value text ({} when the run has no such tag or it is not a JSON object).
    """
    raw = row.get(f"tags.{OVERRIDES_TAG}") if f"tags.{OVERRIDES_TAG}" in row.index else None
    if raw is None or (isinstance(raw, float) and pd.isna(raw)) or not str(raw).strip():
        return {}
    try:
        value = json.loads(str(raw))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _first_present(row: pd.Series, columns: Sequence[str]) -> Any:
    for col in columns:
        if col in row.index:
            value = row[col]
            if value is not None and not (isinstance(value, float) and pd.isna(value)) and str(value) != "":
                return value
    return None


def _branch_words_from_params(row: pd.Series) -> str | None:
    flags = []
    for name in BRANCHES:
        value = _first_present(row, (f"params.model.use_{name}", f"params.model.backbone.use_{name}",
                                     f"params.use_{name}"))
        if value is None:
            return None
        flags.append(str(value).strip().lower() in ("true", "1", "yes"))
    return branches_in_words(*flags)


def _metric_columns(runs: pd.DataFrame) -> dict[str, str]:
    """Comparison column name -> runs column holding it: NM/BG/CL rank-1 (CASIA-B), rank-1 (OU-MVLP),
    then the mAP metrics."""
    cols: dict[str, str] = {}
    for cond in CONDITIONS:
        for candidate in (f"metrics.test/{cond}/rank1", f"metrics.test/{cond}/rank-1", f"metrics.{cond}/rank1"):
            if candidate in runs.columns:
                cols[f"{cond} rank-1"] = candidate
                break
    if "metrics.test/rank1" in runs.columns:  # single-probe-set protocols (OU-MVLP)
        cols["rank-1"] = "metrics.test/rank1"
    for cond in CONDITIONS:
        if f"metrics.test/{cond}/mAP" in runs.columns:
            cols[f"{cond} mAP"] = f"metrics.test/{cond}/mAP"
    if "metrics.test/mAP" in runs.columns:
        cols["mAP"] = "metrics.test/mAP"
    return cols


def _headline(row: pd.Series) -> float | None:
    """A run's ``test/mean/rank1``; runs logged before it existed get it from their rank-1 metrics
    through the same helper the evaluator uses."""
    value = row.get(f"metrics.{HEADLINE_METRIC}")
    if value is not None and not pd.isna(value):
        return float(value)
    from lstc_gait.evaluation.evaluator import headline_rank1

    metrics = {k[len("metrics.test/"):]: v for k, v in row.items()
               if str(k).startswith("metrics.test/") and v is not None and not pd.isna(v)}
    return headline_rank1(metrics)


def build_comparison(runs: pd.DataFrame, swept: Sequence[str] | None = None,
                     sort_by: str | None = None) -> pd.DataFrame:
    """One row per job of a sweep: its swept settings, status, NM/BG/CL rank-1, mAP and the headline
    (mean of the NM/BG/CL rank-1; the rank-1 itself for single-probe-set protocols such as OU-MVLP).

    ``runs`` is what :func:`load_child_runs` returns for the children of one sweep parent.
    ``swept`` names the override keys to show; by default the keys whose value differs between jobs
    (all override keys when there is a single job). A ``model/branches`` setting is shown in words,
    e.g. ``temporal+spatial``. Rows keep job order (job number, else start time), or are sorted by
    the column ``sort_by`` (best first, runs without a value last, ties in job order).

    Args:
        runs: The child runs (:func:`load_child_runs`).
        swept: Override keys to show (None: those that differ).
        sort_by: A column to sort by, descending (:data:`HEADLINE` for the sweep's table).

    Returns:
        The table: swept settings, ``status``, metric columns, :data:`HEADLINE`, ``run_id``.
    """
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=["run_id", "status", HEADLINE])
    runs = runs.reset_index(drop=True)
    per_run = []
    for _, row in runs.iterrows():
        overrides = overrides_of(row)
        words = _first_present(row, _BRANCH_TAGS)
        per_run.append((overrides, words))

    all_keys: list[str] = []
    for overrides, _ in per_run:
        all_keys.extend(k for k in overrides if k not in all_keys)
    if swept is None:
        if len(per_run) == 1:
            swept = list(all_keys)
        else:
            swept = [k for k in all_keys if len({o.get(k) for o, _ in per_run}) > 1]
    swept = list(swept)

    metric_cols = _metric_columns(runs)
    records = []
    for i, (_, row) in enumerate(runs.iterrows()):
        overrides, words = per_run[i]
        rec: dict[str, Any] = {}
        for key in swept:
            value = overrides.get(key)
            if key in _BRANCH_OVERRIDE_KEYS:
                value = words if words is not None else (branch_choice_in_words(value) if value is not None
                                                         else _branch_words_from_params(row))
            rec[key] = value
        rec["status"] = row.get("status")
        for name, col in metric_cols.items():
            value = row.get(col)
            rec[name] = None if value is None or pd.isna(value) else float(value)
        rec[HEADLINE] = _headline(row)
        rec["run_id"] = row.get("run_id")
        job_num = _first_present(row, _JOB_NUM_TAGS)
        if job_num is None:  # a sweep job's run dir is <sweep dir>/<job num>
            run_dir = _first_present(row, _RUN_DIR_TAGS)
            job_num = os.path.basename(str(run_dir).rstrip("/\\")) if run_dir is not None else None
        rec["_order"] = (float(job_num) if job_num is not None and str(job_num).lstrip("-").isdigit()
                         else float("inf"))
        rec["_start"] = row.get("start_time")
        records.append(rec)

    table = pd.DataFrame.from_records(records)
    table = table.sort_values(["_order", "_start"], kind="stable").drop(columns=["_order", "_start"])
    ordered = [*swept, "status", *metric_cols.keys(), HEADLINE, "run_id"]
    table = table[ordered].reset_index(drop=True)
    for name in [*metric_cols.keys(), HEADLINE]:
        table[name] = pd.to_numeric(table[name], errors="coerce")
    if sort_by is not None and sort_by in table.columns:
        table = table.sort_values(sort_by, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    return table


def setting_labels(table: pd.DataFrame) -> list[str]:
    """A short label per row naming its swept settings (``model.num_stripes=6 pooling.topk=2``)."""
    fixed = {"status", "run_id", HEADLINE}
    setting_cols = [c for c in table.columns if c not in fixed and "rank-1" not in c and "mAP" not in c]
    labels = []
    for i, (_, row) in enumerate(table.iterrows()):
        parts = []
        for col in setting_cols:
            value = row[col]
            if value is None or (isinstance(value, float) and pd.isna(value)):
                continue
            parts.append(str(value) if col in _BRANCH_OVERRIDE_KEYS else f"{col}={value}")
        labels.append(" ".join(parts) if parts else f"job {i}")
    return labels


def format_markdown(table: pd.DataFrame, title: str | None = None, digits: int = 2) -> str:
    """GitHub Markdown of a comparison table (numbers rounded; missing values shown as ``-``)."""
    shown = table.copy()
    align = []
    for col in shown.columns:
        numeric = pd.api.types.is_numeric_dtype(shown[col])
        align.append("right" if numeric else "left")
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "-" if pd.isna(v) else f"{v:.{digits}f}")
    shown = shown.astype(object).where(shown.notna(), "-").astype(str)
    body = (shown.to_markdown(index=False, disable_numparse=True, colalign=align) if len(shown.columns) else "")
    return (f"**{title}**\n\n{body}\n" if title else f"{body}\n")


def write_comparison(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "comparison",
                     title: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically; returns both paths."""
    out = Path(out_dir)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    atomic_write_text(csv_path, table.to_csv(index=False))
    atomic_write_text(md_path, format_markdown(table, title))
    return csv_path, md_path


def plot_comparison(table: pd.DataFrame, path: str | os.PathLike, metric: str = HEADLINE,
                    title: str | None = None) -> Path | None:
    """Horizontal bar chart of ``metric`` per setting (PNG, Agg backend); None when nothing to plot."""
    if metric not in table.columns or table[metric].notna().sum() == 0:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = setting_labels(table)
    raw = table[metric].astype(float).tolist()
    values = [0.0 if pd.isna(v) else v for v in raw]
    statuses = [str(s).upper() for s in table.get("status", pd.Series(["FINISHED"] * len(table)))]
    failed = [s != "FINISHED" for s in statuses]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.4))
    colors = ["#c0504d" if f else "#4f81bd" for f in failed]
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    for yi, v, r, st in zip(y, values, raw, statuses):
        ax.text(v, yi, f" {r:.1f}" if not pd.isna(r) else f" {st.lower()}: no result", va="center", fontsize=8)
    ax.set_xlabel(f"{metric} (%)")
    ax.set_xlim(0, max(100.0, max(values) * 1.1 if values else 100.0))
    note = " (red: failed run)" if any(failed) else ""
    ax.set_title(title or f"{metric} per setting{note}", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    try:
        with atomic_output(out) as tmp, open(tmp, "wb") as fh:
            fig.savefig(fh, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------- MLflow side


def runs_frame(runs: Iterable[Any]) -> pd.DataFrame:
    """MLflow runs as one row each: ``run_id``, ``experiment_id``, ``status``, ``start_time``,
    ``end_time``, ``params.*``, ``metrics.*`` (latest values) and ``tags.*`` columns.

    Args:
        runs: ``mlflow.entities.Run`` objects.

    Returns:
        The frame (no rows and only the fixed columns when ``runs`` is empty).
    """
    records = []
    for run in runs:
        rec: dict[str, Any] = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                               "status": run.info.status,
                               "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
                               "end_time": (pd.to_datetime(run.info.end_time, unit="ms", utc=True)
                                            if run.info.end_time else None)}
        rec.update({f"params.{k}": v for k, v in run.data.params.items()})
        rec.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        rec.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        records.append(rec)
    columns = ["run_id", "experiment_id", "status", "start_time", "end_time"]
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=columns)


def _search_all(client: Any, experiment_ids: list[str], filter_string: str = "",
                order_by: list[str] | None = None, max_results: int | None = None) -> list[Any]:
    from mlflow.entities import ViewType

    found: list[Any] = []
    token = None
    while True:
        page = call_with_retry(client.search_runs, experiment_ids, filter_string, ViewType.ACTIVE_ONLY,
                               max_results=min(1000, max_results or 1000), order_by=order_by, page_token=token)
        found.extend(page)
        token = getattr(page, "token", None)
        if not token or (max_results is not None and len(found) >= max_results):
            return found[:max_results] if max_results is not None else found


def load_child_runs(client: Any, parent_run_id: str, experiment_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """All child runs (any status) of a sweep parent run.

    Args:
        client: An ``mlflow.MlflowClient`` of the store (:func:`lstc_gait.tracking.store.open_store`).
        parent_run_id: The parent run.
        experiment_ids: Experiments to search (None: the parent's).

    Returns:
        :func:`runs_frame` of the children.
    """
    if experiment_ids is None:
        experiment_ids = [call_with_retry(client.get_run, parent_run_id).info.experiment_id]
    runs = _search_all(client, list(experiment_ids), f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return runs_frame(runs)


def find_parent_run(client: Any, experiment_name: str | None = None,
                    parent_run_id: str | None = None) -> dict[str, str]:
    """Locate a sweep parent run.

    The given run id, else the latest parent in ``experiment_name``, else the latest parent in the
    whole store. A parent is a run tagged by the sweep callback or, for sweeps recorded by other
    tools, any run that other runs name as ``mlflow.parentRunId``.

    Args:
        client: An ``mlflow.MlflowClient`` of the store.
        experiment_name: Experiment to search (None: all).
        parent_run_id: The parent's id, when known.

    Returns:
        ``{"run_id", "experiment_id", "experiment_name", "run_name"}``.

    Raises:
        LookupError: Nothing matches (the message names what was searched).
    """
    from mlflow.entities import ViewType

    uri = client.tracking_uri
    if parent_run_id:
        try:
            run = call_with_retry(client.get_run, parent_run_id)
        except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
            raise LookupError(f"no run with id {parent_run_id!r} in {uri}") from exc
        exp = call_with_retry(client.get_experiment, run.info.experiment_id)
        return {"run_id": run.info.run_id, "experiment_id": exp.experiment_id, "experiment_name": exp.name,
                "run_name": run.info.run_name or ""}

    if experiment_name:
        exp = call_with_retry(client.get_experiment_by_name, experiment_name)
        if exp is None:
            raise LookupError(f"no MLflow experiment named {experiment_name!r} in {uri}")
        experiments = [exp]
    else:
        experiments = call_with_retry(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)
    exp_ids = [e.experiment_id for e in experiments]
    names = {e.experiment_id: e.name for e in experiments}
    if not exp_ids:
        raise LookupError(f"the MLflow store {uri} has no experiments")

    tagged = _search_all(client, exp_ids, f"tags.`{PARENT_ROLE_TAG}` = '{PARENT_ROLE_VALUE}'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    if tagged:
        run = tagged[0]
    else:
        # Sweeps recorded without this platform's callback: the newest run that has children.
        runs = _search_all(client, exp_ids)
        parent_ids = {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}
        if not parent_ids:
            where = f"experiment {experiment_name!r}" if experiment_name else "any experiment"
            raise LookupError(f"no sweep (parent run with child runs) in {where} of {uri}")
        parents = sorted((r for r in runs if r.info.run_id in parent_ids), key=lambda r: r.info.start_time,
                         reverse=True)
        if not parents:
            raise LookupError(f"child runs in {uri} name parents that no longer exist")
        run = parents[0]
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
            "experiment_name": names.get(run.info.experiment_id, ""),
            "run_name": str(run.data.tags.get("mlflow.runName") or run.info.run_name or "")}


def sweep_swept_keys(parent_tags: dict[str, str]) -> list[str] | None:
    """Swept override keys recorded on a parent by the sweep callback.

    Args:
        parent_tags: The parent run's tags.

    Returns:
        The keys, or None when not recorded.
    """
    raw = parent_tags.get(SWEEP_OVERRIDES_TAG)
    if not raw:
        return None
    try:
        keys = json.loads(raw)
    except ValueError:
        return None
    return [str(k) for k in keys] if isinstance(keys, list) else None


__all__ = ["BRANCHES", "BRANCH_CONFIG_WORDS", "CONDITIONS", "HEADLINE", "HEADLINE_METRIC", "OVERRIDES_TAG", "PARENT_ROLE_TAG",
           "PARENT_ROLE_VALUE", "SWEEP_DIR_TAG", "SWEEP_OVERRIDES_TAG", "branch_choice_in_words",
           "branches_in_words", "build_comparison", "find_parent_run", "format_markdown", "load_child_runs",
           "overrides_of", "plot_comparison", "runs_frame", "setting_labels", "sweep_swept_keys",
           "write_comparison"]
