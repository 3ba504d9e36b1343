"""Report job: the comparison table of one sweep, from any MLflow store, any time later."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lstc_gait.errors import UserError

log = logging.getLogger("lstc_gait.report")


class ReportError(UserError, LookupError):
    """No store, no sweep, or a sweep without child runs."""


def report(cfg: DictConfig) -> list[Path]:
    """Build, print and write the comparison of the sweep the ``report`` config names.

    Args:
        cfg: The composed ``conf/report.yaml`` (``tracking.uri``, ``experiment_name``, ``parent_run``,
            ``out_dir``, ``stem``, ``plot``, ``metric``, ``log_to_parent``).

    Returns:
        The written files (CSV, Markdown, PNG when plotted).

    Raises:
        ReportError: No MLflow store (a report never creates one), no matching sweep, or no child runs.
    """
    from lstc_gait.tracking import report as R
    from lstc_gait.tracking.store import call_with_retry, open_store

    try:
        store = open_store(cfg.tracking.uri, cfg.paths.output_dir, create=False)
        parent = R.find_parent_run(store.client, experiment_name=cfg.experiment_name, parent_run_id=cfg.parent_run)
    except (FileNotFoundError, LookupError) as exc:
        raise ReportError(str(exc)) from exc
    client = store.client
    parent_run = call_with_retry(client.get_run, parent["run_id"])
    children = R.load_child_runs(client, parent["run_id"], [parent["experiment_id"]])
    if len(children) == 0:
        raise ReportError(f"parent run {parent['run_id']} has no child runs")
    table = R.build_comparison(children, swept=R.sweep_swept_keys(parent_run.data.tags), sort_by=cfg.metric)
    title = (f"{parent['experiment_name']} / {parent['run_name'] or parent['run_id']} "
             f"({parent['run_id']}): {len(table)} jobs")
    print(R.format_markdown(table, title))

    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("outputs") / "reports" / parent["run_id"]
    files = list(R.write_comparison(table, out_dir, cfg.stem, title=title))
    if cfg.plot:
        png = R.plot_comparison(table, out_dir / f"{cfg.stem}.png", metric=cfg.metric)
        if png is not None:
            files.append(png)
        elif cfg.metric not in table.columns:
            log.warning("metric %r is not a column of the table (%s); no plot", cfg.metric,
                        ", ".join(map(str, table.columns)))
    if cfg.log_to_parent:
        for path in files:
            call_with_retry(client.log_artifact, parent["run_id"], str(path), "report")
    print("wrote " + ", ".join(str(p) for p in files))
    return files


__all__ = ["ReportError", "report"]
