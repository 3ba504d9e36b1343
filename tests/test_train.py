"""End-to-end training on the tiny synthetic dataset: every option of every group, MLflow, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstc_gait.train import JobInfo, run

# Seven short runs that together use every option of every training group at least once.
COMBOS = [
    ["model=lstc", "model/branches=all", "pooling=hard", "loss=ce", "sampler=random"],
    ["model=dynamic", "model/branches=temporal", "pooling=soft", "loss=triplet", "sampler=pk"],
    ["model=lstc", "model/branches=spatial", "pooling=mean", "loss=ce_triplet", "sampler=multiview_pk"],
    ["model=dynamic", "model/branches=joint", "pooling=max", "loss=ce", "sampler=pk"],
    ["model=lstc", "model/branches=temporal_spatial", "pooling=soft", "loss=ce", "sampler=random"],
    ["model=dynamic", "model/branches=temporal_joint", "pooling=hard", "loss=triplet", "sampler=multiview_pk"],
    ["model=lstc", "model/branches=spatial_joint", "pooling=mean", "loss=ce_triplet", "sampler=pk",
     "trainer=default", "trainer.max_steps=2", "trainer.progress=false", "model.base_channels=8",
     "sampler.p=4", "sampler.k=2", "dataset.num_frames=6"],
]


@pytest.mark.parametrize("overrides", COMBOS, ids=[c[1].split("=")[1] for c in COMBOS])
def test_every_option_trains_and_evaluates(debug_cfg, tmp_path, overrides):
    cfg = debug_cfg(*overrides, "trainer.max_steps=2", "trainer.log_every=1", "trainer.checkpoint_every=0")
    if "trainer=default" in overrides:  # trainer=default with the tiny data
        cfg.trainer.shrink_synthetic = debug_cfg().trainer.shrink_synthetic
    result = run(cfg, tmp_path / "run", JobInfo(overrides=overrides))
    assert result.step == 2 and len(result.losses) == 2
    assert all(torch.isfinite(torch.tensor(v)) for _, v in result.losses)
    for key in ("NM/rank1", "BG/rank1", "CL/rank1", "mAP"):
        assert 0.0 <= result.metrics[key] <= 100.0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "tables" / "rank1.csv").is_file()


def test_casia_b_layout_option_prepares_raw_silhouettes(debug_cfg, tiny_data_dir, tmp_path):
    """dataset=casia_b on the synthetic raw frames: the full raw -> pretreat -> cache -> train path."""
    raw = next(p for p in tiny_data_dir.glob("synthgait-*/raw") if p.is_dir())
    cfg = debug_cfg("dataset=casia_b", f"dataset.root={raw}", "trainer.max_steps=1", "dataset.num_frames=6",
                    "dataset.workers=1")
    result = run(cfg, tmp_path / "run")
    assert result.step == 1 and "CL/rank1" in result.metrics


def test_missing_dataset_root_is_a_clear_error(debug_cfg, tmp_path):
    for name in ("flat", "ou_mvlp", "opengait"):
        with pytest.raises(ValueError, match="dataset.root|partition_file"):
            run(debug_cfg(f"dataset={name}"), tmp_path / name)


def _mlflow_runs(uri: str, experiment: str = "lstc_gait"):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id])


def test_mlflow_run_records_params_metrics_tables_and_checkpoints(debug_cfg, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    overrides = ["model=dynamic", "pooling=soft"]
    cfg = debug_cfg(*overrides, "tracking=mlflow", f"tracking.uri={uri}", "trainer.max_steps=2",
                    "trainer.log_every=1")
    run(cfg, tmp_path / "run", JobInfo(overrides=overrides, choices={"model": "dynamic"}))
    client, runs = _mlflow_runs(uri)
    (r,) = runs
    assert r.info.status == "FINISHED" and r.info.run_name == "model=dynamic,pooling=soft"
    assert len(r.data.params) >= 20 and r.data.params["model.variant"] == "dynamic"
    assert r.data.params["trainer.optimizer.lr"] == "0.001"
    for key in ("test/NM/rank1", "test/BG/rank1", "test/CL/rank1", "test/mAP", "train/loss", "train/lr"):
        assert key in r.data.metrics, key
    assert len(client.get_metric_history(r.info.run_id, "train/loss")) == 2
    assert r.data.tags["branches"] == "temporal+spatial+joint" and r.data.tags["choice.model"] == "dynamic"
    paths = {a.path for d in ("tables", "checkpoints", "config") for a in client.list_artifacts(r.info.run_id, d)}
    assert {"tables/rank1.csv", "tables/rank1.md", "tables/rank1.json", "checkpoints/last.pt",
            "config/config_resolved.yaml"} <= paths
    # the artifact store sits beside the SQLite file, not in ./mlruns
    assert str(tmp_path / "store" / "mlartifacts") in r.info.artifact_uri


def test_a_failing_job_ends_its_run_as_failed(debug_cfg, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = debug_cfg("tracking=mlflow", f"tracking.uri={uri}", "trainer.max_steps=3")

    def boom(step: int) -> None:
        if step == 1:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        run(cfg, tmp_path / "run", step_hook=boom)
    _, (r,) = _mlflow_runs(uri)
    assert r.info.status == "FAILED"


def test_cli_debug_run_leaves_a_finished_mlflow_run(tiny_data_dir, tmp_path):
    """The issue's check, as a user runs it (a real subprocess through Hydra)."""
    db = tmp_path / "X.db"
    cmd = [sys.executable, "-m", "lstc_gait.train", "trainer=debug", "model=dynamic", "pooling=soft",
           "loss=ce_triplet", "sampler=pk", f"tracking.uri=sqlite:///{db}", f"hydra.run.dir={tmp_path / 'D'}",
           f"paths.data_dir={tiny_data_dir}", "trainer.max_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| NM" in proc.stdout and "| CL" in proc.stdout  # the per-view table is printed
    client, (r,) = _mlflow_runs(f"sqlite:///{db}")
    assert r.info.status == "FINISHED" and len(r.data.params) >= 20
    assert {"test/NM/rank1", "test/CL/rank1"} <= set(r.data.metrics)
    assert (Path(tmp_path / "D") / "checkpoints" / "last.pt").is_file()
    assert (Path(tmp_path / "D") / ".hydra" / "config.yaml").is_file()
