"""Hydra multirun sweeps: presets, the three launchers, the MLflow parent run and its comparison table,
failing jobs, and concurrent SQLite writers. Every sweep is 2 tiny trainer=debug jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from lstc_gait.tracking import report, sweep

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "lstc_gait" / "conf")
TINY = ["trainer=debug", "trainer.max_steps=3", "trainer.checkpoint_every=3", "trainer.log_every=1",
        "model.embedding_dim=16", "eval.batch_size=32"]


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from lstc_gait.config_schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("preset, params", [
    ("ablation_branches", {"model/branches": "all,temporal,spatial,joint,temporal_spatial,temporal_joint,"
                                             "spatial_joint"}),
    ("sweep_stripes_topk", {"model.num_stripes": "6,8,10", "pooling.topk": "2,3,4"}),
    ("ablation_pooling", {"pooling": "hard,soft,mean,max"}),
    ("ablation_joint", {"model": "lstc,dynamic"}),
])
def test_presets_carry_their_sweep_and_combine_with_debug(preset, params):
    cfg = compose_with_hydra([f"experiment={preset}", "trainer=debug"])
    assert dict(cfg.hydra.sweeper.params) == params
    debug_only = compose_with_hydra(["trainer=debug"])
    assert cfg.trainer.max_steps == debug_only.trainer.max_steps  # trainer=debug still applies
    assert cfg.trainer.max_steps < compose_with_hydra([]).trainer.max_steps
    assert cfg.hydra.callbacks.mlflow_sweep._target_ == "lstc_gait.tracking.sweep.SweepParentCallback"
    # every swept value composes to the setting it names (a job = the preset + one choice per key)
    for key, values in params.items():
        for value in values.split(","):
            job = compose_with_hydra([f"experiment={preset}", "trainer=debug", f"{key}={value}"])
            if key == "model/branches":
                on = [b for b in ("temporal", "spatial", "joint") if job.model[f"use_{b}"]]
                assert on == (["temporal", "spatial", "joint"] if value == "all" else value.split("_"))
            elif key == "model":
                assert job.model.variant == value
            elif key == "pooling":
                assert job.pooling.name == value
            else:
                assert str(OmegaConf.select(job, key)) == value


def test_parent_run_id_file_wins_over_stale_env(tmp_path, monkeypatch):
    monkeypatch.setenv(sweep.ENV_PARENT_RUN_ID, "stale")
    monkeypatch.setenv(sweep.ENV_SWEEP_DIR, str(tmp_path / "other"))
    assert sweep.parent_run_id(tmp_path / "s") is None  # env names another sweep dir
    monkeypatch.setenv(sweep.ENV_SWEEP_DIR, str(tmp_path / "s"))
    assert sweep.parent_run_id(tmp_path / "s") == "stale"
    sweep.write_parent_run_id(tmp_path / "s", "abc123")
    assert sweep.parent_run_id(tmp_path / "s") == "abc123"
    assert [p.name for p in (tmp_path / "s").iterdir()] == [sweep.PARENT_FILE]  # no temp files left


def test_call_with_retry_retries_only_lock_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert sweep.call_with_retry(flaky, base_delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        sweep.call_with_retry(lambda: (_ for _ in ()).throw(ValueError("bad")), base_delay=0.001)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module's sweeps (its migrations run once, by the first sweep's parent)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'x.db'}"


def _sweep(tmp_path: Path, data_dir: Path, uri: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(sweep.ENV_PARENT_RUN_ID, None)
    cmd = [sys.executable, "-m", "lstc_gait.train", "-m", *TINY, f"paths.data_dir={data_dir}",
           f"paths.output_dir={tmp_path / 'out'}", f"tracking.uri={uri}", f"hydra.sweep.dir={sweep_dir}", *args]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    return run, sweep_dir


def _parent_and_children(uri: str, sweep_dir: Path):
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(tracking_uri=uri)
    pid = sweep.parent_run_id(sweep_dir)
    assert pid, f"no parent run id file in {sweep_dir}"
    parent = client.get_run(pid)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{pid}'",
                                  run_view_type=ViewType.ALL)
    return client, parent, children


def _check_comparison(client, parent, sweep_dir: Path, n: int) -> pd.DataFrame:
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert len(table) == n
    assert (sweep_dir / "comparison.md").is_file()
    assert (sweep_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/comparison.md", "comparison/comparison.png",
            "comparison/comparison_table.json"} <= arts
    return table


def test_basic_launcher_failing_job_is_recorded_and_table_still_written(tmp_path, tiny_data_dir, store):
    run, sweep_dir = _sweep(tmp_path, tiny_data_dir, store, "dataset.split=casia_b,bogus")
    assert run.returncode != 0  # Hydra reports the failed job after running all of them
    client, parent, children = _parent_and_children(store, sweep_dir)
    # a job refused by validate_run_config fails before its run logs params: the callback's FAILED run
    # carries the job's overrides instead
    status = {c.data.params.get("dataset.split") or ("bogus" if "dataset.split=bogus" in
                                                     c.data.tags.get("lstc_gait.overrides", "") else None):
              c.info.status for c in children}
    assert status == {"casia_b": "FINISHED", "bogus": "FAILED"}
    assert parent.info.status == "FAILED"
    table = _check_comparison(client, parent, sweep_dir, 2)
    assert table["dataset.split"].tolist() == ["casia_b", "bogus"]  # best first, no result last
    failed = next(c for c in children if c.info.status == "FAILED")
    assert failed.data.tags["error"] and failed.info.run_name == "split=bogus"
    ok = table.iloc[0]
    good = next(c for c in children if c.info.status == "FINISHED")
    for cond in ("NM", "BG", "CL"):
        assert ok[f"{cond} rank-1"] == pytest.approx(good.data.metrics[f"test/{cond}/rank1"])
    assert ok["mAP"] == pytest.approx(good.data.metrics["test/mAP"])
    assert table.iloc[1]["status"] == "FAILED" and pd.isna(table.iloc[1]["NM rank-1"])
    assert json.loads(parent.data.tags["lstc_gait.sweep_overrides"]) == ["dataset.split"]


def test_joblib_two_workers_lose_nothing(tmp_path, tiny_data_dir, store):
    """Two jobs write the same SQLite store at once: every param, metric and status arrives."""
    run, sweep_dir = _sweep(tmp_path, tiny_data_dir, store, "experiment=ablation_joint",
                            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert run.returncode == 0, run.stderr[-3000:]
    client, parent, children = _parent_and_children(store, sweep_dir)
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["model.variant"] in ("lstc", "dynamic")
        assert {"test/NM/rank1", "test/BG/rank1", "test/CL/rank1", "test/mAP"} <= set(child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == [1, 2, 3]  # log_every=1, 3 steps: nothing lost
    table = _check_comparison(client, parent, sweep_dir, 2)
    assert sorted(table["model"]) == ["dynamic", "lstc"]
    heads = table[report.HEADLINE].tolist()
    assert heads == sorted(heads, reverse=True)  # best first
    for child in children:  # short names: the swept setting only
        assert child.info.run_name == f"model={child.data.params['model.variant']}"


def test_submitit_local_sweep(tmp_path, tiny_data_dir, store):
    run, sweep_dir = _sweep(tmp_path, tiny_data_dir, store, "pooling=hard,mean",
                            "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert run.returncode == 0, run.stderr[-3000:]
    client, parent, children = _parent_and_children(store, sweep_dir)
    assert parent.info.status == "FINISHED" and {c.info.status for c in children} == {"FINISHED"}
    table = _check_comparison(client, parent, sweep_dir, 2)
    assert sorted(table["pooling"]) == ["hard", "mean"]
    assert {c.data.tags["branches"] for c in children} == {"temporal+spatial+joint"}


def test_callback_records_jobs_that_never_opened_a_run(tmp_path):
    """on_job_end: a job that failed before opening its run gets a FAILED child (once); finalize_parent
    closes children left RUNNING, writes the table with both, and marks the parent FAILED."""
    import mlflow
    from hydra.core.utils import JobReturn, JobStatus

    uri = f"sqlite:///{tmp_path / 'x.db'}"
    sweep_dir = tmp_path / "sweep"
    base = {"tracking": {"enabled": True, "uri": uri, "experiment": "unit"}, "paths": {"output_dir": str(tmp_path)},
            "hydra": {"sweep": {"dir": str(sweep_dir)}, "sweeper": {"params": {"pooling": "hard,soft"}},
                      "overrides": {"task": ["pooling=hard,soft"]}}}
    callback = sweep.SweepParentCallback(plot=False)
    callback.on_multirun_start(OmegaConf.create(base))
    parent = sweep.parent_run_id(sweep_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_run(parent).info.experiment_id
    # job 0 opened its run and died without closing it; job 1 crashed before opening one
    client.create_run(exp, run_name="pooling=hard", tags={"mlflow.parentRunId": parent,
                                                           "lstc_gait.overrides": "pooling=hard",
                                                           "lstc_gait.overrides_json": '{"pooling": "hard"}',
                                                           "lstc_gait.run_dir": str(sweep_dir / "0")})
    job1 = OmegaConf.merge(base, {"hydra": {"runtime": {"output_dir": str(sweep_dir / "1")},
                                            "overrides": {"task": ["pooling=soft"]}}})
    failed = JobReturn(status=JobStatus.FAILED, _return_value=ValueError("pooling.name='soft' is broken"))
    callback.on_job_end(job1, failed)
    callback.on_job_end(job1, failed)  # idempotent: the run dir tag matches now
    callback.on_job_end(job1, JobReturn(status=JobStatus.COMPLETED, _return_value=1.0))
    callback.on_multirun_end(OmegaConf.create(base))

    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
    soft = next(c for c in children if c.data.tags["lstc_gait.overrides"] == "pooling=soft")
    assert "is broken" in soft.data.tags["error"]
    assert client.get_run(parent).info.status == "FAILED"
    table = pd.read_csv(sweep_dir / "comparison.csv")
    assert table["pooling"].tolist() == ["hard", "soft"] and set(table["status"]) == {"FAILED"}
    assert sweep.ENV_PARENT_RUN_ID not in os.environ  # the export is cleaned up after the sweep
