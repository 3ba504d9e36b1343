"""``python -m lstc_gait.report`` / ``lstc-gait-report``: print and write the comparison table of one sweep.

Works on any MLflow store (``tracking.uri=``), for the latest sweep, the latest sweep of a named
``experiment_name=``, or a given ``parent_run=`` id; the sweep may have run on other machines against a
shared tracking server. Library function: :func:`lstc_gait.pipelines.report.report`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lstc_gait.errors import run_hydra_main, run_job


@hydra.main(config_path="conf", config_name="report", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from lstc_gait.pipelines.report import report

    run_job("report", lambda: report(cfg))


def main() -> None:
    """Compose ``conf/report.yaml`` with the command line and report.

    User errors (also those raised while Hydra sets up the run) end as one line and exit status 2.
    """
    run_hydra_main("report", _hydra_main)


if __name__ == "__main__":
    main()
