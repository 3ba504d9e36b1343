"""Tracking that never loses a sweep and reads well in the MLflow UI (issue 14): concurrent store
creation, failure reasons, the headline metric, run names and provenance, file modes, resume."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lstc_gait.evaluation.evaluator import headline_rank1
from lstc_gait.pipelines.train import JobInfo, run
from lstc_gait.tracking import names, report, store, sweep

ROOT = Path(__file__).resolve().parents[1]

_OPENER = r"""
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():   # both processes have imported everything: start together
    time.sleep(0.01)
from lstc_gait.tracking.store import open_store
s = open_store(sys.argv[1])
exp = s.experiment("race")
run = s.client.create_run(exp, run_name=sys.argv[3])
s.client.set_terminated(run.info.run_id, "FINISHED")
print("ok", run.info.run_id)
"""


def test_two_processes_create_a_fresh_store_together(tmp_path):
    """Two real processes open a store that does not exist yet at the same moment: both runs land."""
    import mlflow

    db = tmp_path / "fresh" / "store.db"
    uri = f"sqlite:///{db}"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, uri, str(go), name], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert out.startswith("ok")
    assert store.store_lock_path(uri) == db.with_name("store.db.lock") and db.with_name("store.db.lock").exists()
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("race")
    assert exp.tags[store.EXPERIMENT_KIND_TAG] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a", "b"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_sweep_without_parent_is_an_error(tmp_path, capsys):
    """A store that cannot be opened stops the sweep (Hydra would only warn about a callback's exception)."""
    from omegaconf import OmegaConf

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = OmegaConf.create({"tracking": {"enabled": True, "uri": f"sqlite:///{blocker}/sub/x.db"},
                            "paths": {"output_dir": str(tmp_path)},
                            "hydra": {"sweep": {"dir": str(tmp_path / "s")}, "overrides": {"task": ["seed=0,1"]}}})
    with pytest.raises(SystemExit) as info:
        sweep.SweepParentCallback(plot=False).on_multirun_start(cfg)
    assert info.value.code == 1
    assert "could not open the MLflow parent run" in capsys.readouterr().err
    # and a job of a tracked sweep that finds no parent refuses to become an unrelated run
    job = JobInfo(overrides=["seed=0"], swept=["seed"], in_tracked_sweep=True)
    from lstc_gait.pipelines.train import build_tracker

    with pytest.raises(sweep.SweepTrackingError):
        build_tracker(OmegaConf.create({"tracking": {"enabled": True}}), job, tmp_path, None)


def test_headline_per_protocol():
    casia = {"NM/rank1": 90.0, "BG/rank1": 81.0, "CL/rank1": 60.0, "mAP": 50.0}
    assert headline_rank1(casia, "casia_b") == pytest.approx(77.0)
    assert headline_rank1(casia) == pytest.approx(77.0)
    ou = {"rank1": 70.0, "rank1_excl_missing": 80.0}
    assert headline_rank1(ou, "ou_mvlp") == 70.0  # misses counted
    assert headline_rank1({"rank1": 42.0, "mAP": 30.0}, "retrieval") == 42.0
    assert headline_rank1({"mAP": 1.0}) is None


def test_comparison_sorts_by_the_headline_metric():
    runs = pd.DataFrame([
        {"run_id": "a", "status": "FINISHED", "tags.lstc_gait.overrides_json": '{"seed": "0"}',
         "metrics.test/mean/rank1": 40.0, "tags.lstc_gait.run_dir": "/s/0"},
        {"run_id": "b", "status": "FAILED", "tags.lstc_gait.overrides_json": '{"seed": "1"}',
         "metrics.test/mean/rank1": None, "tags.lstc_gait.run_dir": "/s/1"},
        {"run_id": "c", "status": "FINISHED", "tags.lstc_gait.overrides_json": '{"seed": "2"}',
         "metrics.test/NM/rank1": 90.0, "metrics.test/BG/rank1": 80.0, "metrics.test/CL/rank1": 70.0,
         "tags.lstc_gait.run_dir": "/s/2"},  # logged before the headline existed: same helper
    ])
    table = report.build_comparison(runs, sort_by=report.HEADLINE)
    assert table["run_id"].tolist() == ["c", "a", "b"]
    assert table[report.HEADLINE].iloc[0] == pytest.approx(80.0)
    assert report.build_comparison(runs)["run_id"].tolist() == ["a", "b", "c"]  # job order otherwise


def test_run_names_are_short_and_distinct():
    assert names.job_run_name({"experiment": "ablation_branches", "model/branches": "spatial_joint"},
                              ["model/branches"]) == "branches=spatial+joint"
    assert names.job_run_name({"trainer": "debug", "seed": "1", "paths.output_dir": "/o",
                               "tracking.uri": "sqlite:////x.db"}, ["seed"]) == "seed=1"
    assert names.job_run_name({"model.num_stripes": "6", "pooling.topk": "2"},
                              ["model.num_stripes", "pooling.topk"]) == "num_stripes=6,topk=2"
    assert names.short_keys(["a.topk", "b.topk"]) == {"a.topk": "a.topk", "b.topk": "b.topk"}
    assert names.job_run_name({"model": "dynamic", "paths.data_dir": "/d", "dataset.root": "/r",
                               "resume": "auto", "pooling": "soft"}) == "model=dynamic,pooling=soft"
    assert names.job_run_name({"paths.output_dir": "/o"}) == "default"
    parent = names.sweep_run_name(["trainer=debug", "seed=0,1", "tracking.uri=sqlite:////a/b.db",
                                   "paths.output_dir=/o", "hydra.sweep.dir=/s"])
    assert parent == "sweep trainer=debug seed=0,1"
    assert names.sweep_run_name(["experiment=ablation_branches"], {"model/branches": "all,joint"}) == \
        "sweep experiment=ablation_branches branches=all,joint"


def test_view_hint_uses_the_model_training_route():
    uri = "sqlite:////tmp/x/mlflow.db"
    assert store.run_url(uri, "3", "abc") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    hint = store.how_to_view(uri, "3", "abc")
    assert f"mlflow ui --backend-store-uri {uri}" in hint and "#/experiments/3/runs/abc" in hint
    assert store.run_url("http://mlflow:8080/", "1") == \
        "http://mlflow:8080/#/experiments/1/runs?workflowType=machine_learning"
    assert store.ui_command("http://mlflow:8080") is None


def test_resumed_run_logs_no_step_twice(tmp_path):
    from lstc_gait.tracking.mlflow import MLflowTracker

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    first = MLflowTracker(uri=uri, run_name="r")
    for step in (1, 2, 3, 4):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.end("KILLED")
    again = MLflowTracker(uri=uri, run_id=first.run_id)  # resumed from a checkpoint at step 2
    for step in (3, 4, 5):
        again.log_metrics({"train/loss": 10.0 + step, "test/mean/rank1": 1.0}, step=step)
    again.end()
    history = again.client.get_metric_history(first.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]
    assert len(again.client.get_metric_history(first.run_id, "test/mean/rank1")) == 3


def test_plot_title_mentions_failed_runs_only_when_there_are_some(tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, t, **kw: titles.append(t))
    table = pd.DataFrame({"seed": ["0", "1"], "status": ["FINISHED", "FINISHED"], report.HEADLINE: [50.0, 60.0],
                          "run_id": ["a", "b"]})
    report.plot_comparison(table, tmp_path / "ok.png")
    table.loc[1, "status"] = "FAILED"
    report.plot_comparison(table, tmp_path / "failed.png")
    assert "failed" not in titles[0] and "failed" in titles[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_tracked_run_headline_names_provenance_tables_modes_and_hint(debug_cfg, tmp_path, capsys, caplog):
    """One real tracked run under umask 022: headline beside the per-condition metrics, name, source
    tags, per-view tables at the artifact root, step lines in the log, world-readable outputs."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    overrides = ["model=dynamic", f"paths.output_dir={tmp_path / 'o'}", "resume=auto"]
    cfg = debug_cfg("tracking=mlflow", f"tracking.uri={uri}", "trainer.max_steps=2", "trainer.log_every=1",
                    "trainer.progress=true")
    old = os.umask(0o022)
    try:
        with caplog.at_level(logging.INFO):
            run(cfg, tmp_path / "run", JobInfo(overrides=overrides, choices={"model": "dynamic"}))
        sweep.write_parent_run_id(tmp_path / "sweep", "x")
        written = report.write_comparison(pd.DataFrame({"a": [1]}), tmp_path / "sweep")
    finally:
        os.umask(old)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("lstc_gait")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.run_name == "model=dynamic"
    m = r.data.metrics
    assert {"test/NM/rank1", "test/BG/rank1", "test/CL/rank1", "test/mean/rank1"} <= set(m)
    assert m["test/mean/rank1"] == pytest.approx((m["test/NM/rank1"] + m["test/BG/rank1"] + m["test/CL/rank1"]) / 3)
    tags = r.data.tags
    assert tags["mlflow.source.name"] and tags["mlflow.user"]
    assert len(tags.get("mlflow.source.git.commit", "")) == 40  # the tests run from a git checkout
    root = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert "rank1.md" in root  # MLflow's compare view shows root files side by side
    out = capsys.readouterr().out
    assert "== model=dynamic ==" in out  # tables headed by the run's name
    assert f"#/experiments/{exp.experiment_id}/runs/{r.info.run_id}?workflowType=machine_learning" in out
    assert "mlflow ui --backend-store-uri" in out
    steps = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("step ")]
    assert len(steps) == 2 and all("loss" in s and " lr " in s and "seq/s" in s for s in steps)  # not a terminal
    files = [*(tmp_path / "run" / "checkpoints").glob("*.pt"), *(tmp_path / "run" / "tables").glob("*.*"),
             tmp_path / "sweep" / sweep.PARENT_FILE, *written]
    art_root = Path(r.info.artifact_uri.removeprefix("file://"))
    files += [p for p in art_root.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert _mode(path) & 0o044 == 0o044, f"{path} is {oct(_mode(path))}"


def test_failed_run_says_why(debug_cfg, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = debug_cfg("tracking=mlflow", f"tracking.uri={uri}", "trainer.max_steps=3")
    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)

    def boom(step: int) -> None:
        if step == 1:
            raise RuntimeError("disk on fire\nsecond line")

    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            run(cfg, tmp_path / "run", step_hook=boom)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    client = mlflow.MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("lstc_gait").experiment_id])
    assert r.info.status == "FAILED"
    assert r.data.tags["error"] == "RuntimeError: disk on fire"
    text = Path(client.download_artifacts(r.info.run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in text and "boom" in text
    logged = log_file.read_text()
    assert "Traceback" in logged and "disk on fire" in logged


def test_tables_logged_at_two_evaluations_keep_their_steps(tmp_path):
    import json

    from lstc_gait.tracking.mlflow import MLflowTracker

    tracker = MLflowTracker(uri=f"sqlite:///{tmp_path / 'm.db'}", run_name="r")
    for step, value in ((100, 50.0), (200, 75.0)):
        table = pd.DataFrame({"000": [value], "mean": [value]}, index=pd.Index(["NM"], name="set"))
        tracker.log_table(table, "rank1", step=step)
    tracker.end()
    local = tracker.client.download_artifacts(tracker.run_id, "tables/rank1.json", str(tmp_path))
    data = json.loads(Path(local).read_text())
    rows = [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]
    assert [(r["step"], r["set"], r["mean"]) for r in rows] == [(100, "NM", 50.0), (200, "NM", 75.0)]
