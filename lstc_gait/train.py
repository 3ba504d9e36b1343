"""``python -m lstc_gait.train [overrides]`` / ``lstc-gait-train``: train, evaluate and track one job.

Composes ``conf/config.yaml`` with the command-line overrides (``model=dynamic pooling=soft``,
``experiment=ablation_branches``, ``--multirun``), applies the process-wide settings, and calls
:func:`lstc_gait.pipelines.train.launch`. ``trainer=ddp trainer.devices=N`` spawns N processes (or
joins a torchrun job). Returns the monitored metric to Hydra (the objective of sweepers like Optuna).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from lstc_gait.config_schema import register_configs
from lstc_gait.errors import run_hydra_main, run_job
from lstc_gait.pipelines.train import JobInfo, launch, run  # noqa: F401 - the public names of this command

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from lstc_gait.engine.device import resolve_device
    from lstc_gait.engine.distributed import torchrun_env
    from lstc_gait.engine.runtime import configure_process
    from lstc_gait.engine.trainer import monitor_value
    from lstc_gait.pipelines.train import job_info_from_hydra

    def body() -> float | None:
        env = torchrun_env() if cfg.trainer.strategy == "ddp" else None
        if env is not None or cfg.trainer.strategy != "ddp" or int(cfg.trainer.devices) == 1:
            # this process trains (spawned DDP workers configure themselves)
            configure_process(resolve_device(cfg.trainer.device, env.local_rank if env else 0),
                              bool(cfg.trainer.deterministic), env.world_size if env else 1)
        result = launch(cfg, Path(HydraConfig.get().runtime.output_dir), job_info_from_hydra())
        return None if result is None or not result.metrics else monitor_value(result.metrics, cfg.eval.monitor)

    # A multirun job's error reaches Hydra (its sweep callback records the run as FAILED with the reason).
    return run_job("train", body)


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM (kill, SLURM preemption) unwinds like Ctrl-C: the MLflow run is closed as KILLED.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry (``lstc-gait-train``) and ``python -m lstc_gait.train``.

    Args:
        argv: Hydra arguments (overrides, ``--multirun``); None reads the command line.
    """
    import signal

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    signal.signal(signal.SIGTERM, _terminate)
    run_hydra_main("train", _hydra_main)


if __name__ == "__main__":
    main()
