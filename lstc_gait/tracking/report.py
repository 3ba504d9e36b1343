"""Sweep comparison tables built from MLflow runs.

The same code serves the sweep callback (at the end of a multirun) and ``python -m lstc_gait.report``
(any MLflow store, any time later): load the child runs of a sweep parent with ``mlflow.search_runs``
into pandas, reduce them to one row per job with the swept settings and the headline metrics, then
write CSV, Markdown and a PNG plot.

``mlflow`` and ``matplotlib`` are imported lazily: this module is imported by the package's
entry points and must stay cheap.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# Tag names written by the sweep callback on the parent run.
PARENT_ROLE_TAG = "lstc_gait.sweep_role"
PARENT_ROLE_VALUE = "parent"
SWEEP_DIR_TAG = "lstc_gait.sweep_dir"
SWEEP_OVERRIDES_TAG = "lstc_gait.sweep_overrides"

BRANCHES = ("temporal", "spatial", "joint")
# Config names of the nested model/branches group in the order the docs list them.
BRANCH_CONFIG_WORDS = {
    "all": "temporal+spatial+joint",
    "temporal": "temporal",
    "spatial": "spatial",
    "joint": "joint",
    "temporal_spatial": "temporal+spatial",
    "temporal_joint": "temporal+joint",
    "spatial_joint": "spatial+joint",
}

# Headline rank-1 metrics of the CASIA-B protocol, as logged by the trainer.
CONDITIONS = ("NM", "BG", "CL")
HEADLINE = "mean rank-1"

# Tags that may hold a job's overrides (first match wins); the run name is the last resort because
# the platform names each run after its overrides.
_OVERRIDE_TAGS = ("tags.lstc_gait.overrides", "tags.overrides", "tags.hydra.overrides", "tags.mlflow.runName")
_BRANCH_TAGS = ("tags.lstc_gait.branches", "tags.branches", "tags.model.branches")
_JOB_NUM_TAGS = ("tags.lstc_gait.job_num", "tags.job_num", "tags.hydra.job.num")
_RUN_DIR_TAGS = ("tags.lstc_gait.run_dir",)
_BRANCH_OVERRIDE_KEYS = ("model/branches", "model.branches", "branches")


def branches_in_words(use_temporal: bool, use_spatial: bool, use_joint: bool) -> str:
    """``temporal+spatial+joint`` style name of a branch setting ("none" when all are off)."""
    on = [name for name, flag in zip(BRANCHES, (use_temporal, use_spatial, use_joint)) if flag]
    return "+".join(on) if on else "none"


def branch_choice_in_words(choice: str) -> str:
    """Words for a ``model/branches`` config name (``temporal_spatial`` -> ``temporal+spatial``)."""
    choice = str(choice).strip()
    if choice in BRANCH_CONFIG_WORDS:
        return BRANCH_CONFIG_WORDS[choice]
    return choice.replace("_", "+")


def split_overrides(text: str) -> list[str]:
    """Split a job's override string into single overrides.

    Accepts a JSON list, or a comma/space separated string; commas inside brackets, braces or quotes
    (list values such as ``kernels=[3,5]``) do not split.
    """
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list):
            return [str(x).strip() for x in items if str(x).strip()]
    parts: list[str] = []
    depth, quote, current = 0, "", []
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch in ", " and depth == 0:
            if current:
                parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if current:
        parts.append("".join(current))
    return [p.strip() for p in parts if "=" in p]


def parse_overrides(text: str) -> dict[str, str]:
    """``"a=1,b/c=x"`` -> ``{"a": "1", "b/c": "x"}``; Hydra prefixes (``+``, ``++``, ``~``) dropped."""
    out: dict[str, str] = {}
    for item in split_overrides(text):
        key, _, value = item.partition("=")
        out[key.strip().lstrip("+~")] = value.strip()
    return out


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


def build_comparison(runs: pd.DataFrame, swept: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per job of a sweep: its swept settings, status, NM/BG/CL rank-1, mAP and the headline
    (mean of the NM/BG/CL rank-1; the rank-1 itself for single-probe-set protocols such as OU-MVLP).

    ``runs`` is what ``mlflow.search_runs`` returns for the children of one sweep parent.
    ``swept`` names the override keys to show; by default the keys whose value differs between jobs
    (all override keys when there is a single job). A ``model/branches`` setting is shown in words,
    e.g. ``temporal+spatial``. Rows keep job order (job number, else start time).
    """
    if runs is None or len(runs) == 0:
        return pd.DataFrame(columns=["run_id", "status", HEADLINE])
    runs = runs.reset_index(drop=True)
    per_run = []
    for _, row in runs.iterrows():
        overrides = parse_overrides(str(_first_present(row, _OVERRIDE_TAGS) or ""))
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
        ranks = [rec[f"{c} rank-1"] for c in CONDITIONS if rec.get(f"{c} rank-1") is not None]
        if not ranks and rec.get("rank-1") is not None:
            ranks = [rec["rank-1"]]
        rec[HEADLINE] = float(sum(ranks) / len(ranks)) if ranks else None
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


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_comparison(table: pd.DataFrame, out_dir: str | os.PathLike, stem: str = "comparison",
                     title: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` atomically; returns both paths."""
    out = Path(out_dir)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    _atomic_write_text(csv_path, table.to_csv(index=False))
    _atomic_write_text(md_path, format_markdown(table, title))
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
    ax.set_title(title or f"{metric} per setting (red: failed run)", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------- MLflow side


def load_child_runs(parent_run_id: str, experiment_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """All child runs (any status) of a parent run, via ``mlflow.search_runs`` (current tracking URI)."""
    import mlflow
    from mlflow.entities import ViewType

    from lstc_gait.tracking.sweep import call_with_retry

    if experiment_ids is None:
        parent = call_with_retry(mlflow.MlflowClient().get_run, parent_run_id)
        experiment_ids = [parent.info.experiment_id]
    return call_with_retry(
        mlflow.search_runs,
        experiment_ids=list(experiment_ids),
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        output_format="pandas",
    )


def find_parent_run(experiment_name: str | None = None, parent_run_id: str | None = None) -> dict[str, str]:
    """Locate a sweep parent: the given run id, else the latest parent in ``experiment_name``, else the
    latest parent in the whole store. A parent is a run tagged by the sweep callback or, for sweeps
    recorded by other tools, any run that other runs name as ``mlflow.parentRunId``.

    Returns ``{"run_id", "experiment_id", "experiment_name", "run_name"}``; raises ``LookupError``
    with a message naming what was searched when nothing matches.
    """
    import mlflow
    from mlflow.entities import ViewType

    from lstc_gait.tracking.sweep import call_with_retry

    client = mlflow.MlflowClient()
    if parent_run_id:
        try:
            run = call_with_retry(client.get_run, parent_run_id)
        except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
            raise LookupError(f"no run with id {parent_run_id!r} in {mlflow.get_tracking_uri()}") from exc
        exp = call_with_retry(client.get_experiment, run.info.experiment_id)
        return {"run_id": run.info.run_id, "experiment_id": exp.experiment_id, "experiment_name": exp.name,
                "run_name": run.info.run_name or ""}

    if experiment_name:
        exp = call_with_retry(client.get_experiment_by_name, experiment_name)
        if exp is None:
            raise LookupError(f"no MLflow experiment named {experiment_name!r} in {mlflow.get_tracking_uri()}")
        experiments = [exp]
    else:
        experiments = call_with_retry(client.search_experiments, view_type=ViewType.ACTIVE_ONLY)
    exp_ids = [e.experiment_id for e in experiments]
    names = {e.experiment_id: e.name for e in experiments}
    if not exp_ids:
        raise LookupError(f"the MLflow store {mlflow.get_tracking_uri()} has no experiments")

    tagged = call_with_retry(
        mlflow.search_runs, experiment_ids=exp_ids, run_view_type=ViewType.ACTIVE_ONLY,
        filter_string=f"tags.`{PARENT_ROLE_TAG}` = '{PARENT_ROLE_VALUE}'",
        order_by=["attributes.start_time DESC"], max_results=1, output_format="pandas",
    )
    if len(tagged):
        row = tagged.iloc[0]
    else:
        # Sweeps recorded without this platform's callback: the newest run that has children.
        runs = call_with_retry(mlflow.search_runs, experiment_ids=exp_ids, run_view_type=ViewType.ACTIVE_ONLY,
                               output_format="pandas")
        col = "tags.mlflow.parentRunId"
        if col not in runs.columns or runs[col].dropna().empty:
            where = f"experiment {experiment_name!r}" if experiment_name else "any experiment"
            raise LookupError(f"no sweep (parent run with child runs) in {where} of {mlflow.get_tracking_uri()}")
        parents = runs[runs["run_id"].isin(set(runs[col].dropna()))].sort_values("start_time", ascending=False)
        if parents.empty:
            raise LookupError(f"child runs in {mlflow.get_tracking_uri()} name parents that no longer exist")
        row = parents.iloc[0]
    return {"run_id": row["run_id"], "experiment_id": row["experiment_id"],
            "experiment_name": names.get(row["experiment_id"], ""),
            "run_name": str(row.get("tags.mlflow.runName") or "")}


def sweep_swept_keys(parent_tags: dict[str, str]) -> list[str] | None:
    """Swept override keys recorded on a parent by the sweep callback (None if not recorded)."""
    raw = parent_tags.get(SWEEP_OVERRIDES_TAG)
    if not raw:
        return None
    try:
        keys = json.loads(raw)
    except ValueError:
        return None
    return [str(k) for k in keys] if isinstance(keys, list) else None
