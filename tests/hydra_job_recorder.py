"""A Hydra callback for tests: appends each finished job's status and error to $JOB_RECORD (one line per job).

Not a test module; the entry-point tests put tests/ on PYTHONPATH and add it with
``+hydra.callbacks.record._target_=hydra_job_recorder.JobRecorder``.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.experimental.callback import Callback


class JobRecorder(Callback):
    """Records ``on_job_end``: what a sweep callback (e.g. the MLflow one) sees of a failed job."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:  # noqa: D102
        with open(os.environ["JOB_RECORD"], "a", encoding="utf-8") as fh:
            value = job_return._return_value
            fh.write(f"{job_return.status.name}\t{type(value).__name__}\t{value}\n")
