"""``python -m lstc_gait.report``: print and write the comparison table of one sweep.

Works on any MLflow store (``tracking.uri=``), for the latest sweep, the latest sweep of a named
``experiment_name=``, or a given ``parent_run=`` id; the sweep may have run on other machines against a
shared tracking server. Library logic lives in ``lstc_gait.tracking.report``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def run_report(cfg: DictConfig) -> int:
    """Build, print and write the comparison; returns a process exit code."""
    import mlflow

    from lstc_gait.tracking.sweep import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.uri, cfg.paths.output_dir)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        # a report only reads: do not create an empty store as a side effect
        print(f"lstc_gait.report: no MLflow store at {uri} (set tracking.uri=...)", file=sys.stderr)
        return 2
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return _report(cfg, uri)
    finally:
        mlflow.set_tracking_uri(previous)


def _report(cfg: DictConfig, uri: str) -> int:
    import mlflow

    from lstc_gait.tracking import report
    from lstc_gait.tracking.sweep import call_with_retry

    try:
        parent = report.find_parent_run(experiment_name=cfg.experiment_name, parent_run_id=cfg.parent_run)
    except LookupError as exc:
        print(f"lstc_gait.report: {exc}", file=sys.stderr)
        return 2
    client = mlflow.MlflowClient()
    parent_run = call_with_retry(client.get_run, parent["run_id"])
    children = report.load_child_runs(parent["run_id"], [parent["experiment_id"]])
    if len(children) == 0:
        print(f"lstc_gait.report: parent run {parent['run_id']} has no child runs", file=sys.stderr)
        return 2
    table = report.build_comparison(children, swept=report.sweep_swept_keys(parent_run.data.tags))
    title = (f"{parent['experiment_name']} / {parent['run_name'] or parent['run_id']} "
             f"({parent['run_id']}): {len(table)} jobs")
    print(report.format_markdown(table, title))

    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path("outputs") / "reports" / parent["run_id"]
    csv_path, md_path = report.write_comparison(table, out_dir, cfg.stem, title=title)
    files = [csv_path, md_path]
    if cfg.plot:
        png = report.plot_comparison(table, out_dir / f"{cfg.stem}.png", metric=cfg.metric)
        if png is not None:
            files.append(png)
        elif cfg.metric not in table.columns:
            log.warning("metric %r is not a column of the table (%s); no plot", cfg.metric,
                        ", ".join(map(str, table.columns)))
    if cfg.log_to_parent:
        for path in files:
            call_with_retry(client.log_artifact, parent["run_id"], str(path), "report")
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


@hydra.main(config_path="conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    code = run_report(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
