"""Sweep comparison tables: override parsing, the table itself, its files, and the report command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lstc_gait.tracking import report

ROOT = Path(__file__).resolve().parents[1]


def _tag(**overrides: str) -> str:
    return json.dumps(overrides)


def test_overrides_come_from_the_structured_tag_only():
    row = pd.Series({"tags.lstc_gait.overrides_json": _tag(**{"model/branches": "temporal_spatial",
                                                              "model.kernels": "[[3,7,3],[3,5,3]]"}),
                     "tags.mlflow.runName": "pooling=soft"})
    # list values stay whole and the run name (free text) is never parsed
    assert report.overrides_of(row) == {"model/branches": "temporal_spatial", "model.kernels": "[[3,7,3],[3,5,3]]"}
    assert report.overrides_of(pd.Series({"tags.mlflow.runName": "pooling=soft"})) == {}
    assert report.overrides_of(pd.Series({"tags.lstc_gait.overrides_json": "not json"})) == {}
    assert report.overrides_of(pd.Series({"tags.lstc_gait.overrides_json": '["a=1"]'})) == {}


def test_branch_words():
    assert report.branches_in_words(True, True, True) == "temporal+spatial+joint"
    assert report.branches_in_words(False, True, True) == "spatial+joint"
    assert report.branch_choice_in_words("all") == "temporal+spatial+joint"
    assert report.branch_choice_in_words("temporal_joint") == "temporal+joint"


def _runs() -> pd.DataFrame:
    # What report.load_child_runs returns for three children, deliberately out of job order.
    return pd.DataFrame([
        {"run_id": "c", "status": "FAILED", "start_time": pd.Timestamp(3),
         "tags.lstc_gait.overrides_json": _tag(experiment="ablation_branches", trainer="debug",
                                               **{"model/branches": "spatial"}),
         "tags.lstc_gait.job_num": "2"},
        {"run_id": "a", "status": "FINISHED", "start_time": pd.Timestamp(2),
         "tags.lstc_gait.overrides_json": _tag(experiment="ablation_branches", trainer="debug",
                                               **{"model/branches": "all"}),
         "tags.lstc_gait.job_num": "0",
         "metrics.test/NM/rank1": 90.0, "metrics.test/BG/rank1": 81.0, "metrics.test/CL/rank1": 60.0,
         "metrics.test/mAP": 55.5},
        {"run_id": "b", "status": "FINISHED", "start_time": pd.Timestamp(1),
         "tags.lstc_gait.overrides_json": _tag(experiment="ablation_branches", trainer="debug",
                                               **{"model/branches": "temporal_joint"}),
         "tags.lstc_gait.job_num": "1",
         "metrics.test/NM/rank1": 50.0, "metrics.test/BG/rank1": 40.0, "metrics.test/CL/rank1": 30.0,
         "metrics.test/mAP": 20.0},
    ])


def test_build_comparison_rows_columns_and_headline():
    table = report.build_comparison(_runs())
    # only the swept key is a setting column; common overrides (experiment, trainer) are not
    assert list(table.columns) == ["model/branches", "status", "NM rank-1", "BG rank-1", "CL rank-1", "mAP",
                                   report.HEADLINE, "run_id"]
    assert table["run_id"].tolist() == ["a", "b", "c"]  # job order
    assert table["model/branches"].tolist() == ["temporal+spatial+joint", "temporal+joint", "spatial"]
    assert table[report.HEADLINE].iloc[0] == pytest.approx((90 + 81 + 60) / 3)
    assert table[report.HEADLINE].iloc[1] == pytest.approx(40.0)
    assert math.isnan(table[report.HEADLINE].iloc[2]) and table["status"].iloc[2] == "FAILED"
    assert table["mAP"].tolist()[:2] == [55.5, 20.0]


def test_build_comparison_prefers_branch_tag_and_explicit_keys():
    runs = _runs()
    runs["tags.lstc_gait.branches"] = ["S", "TSJ", "TJ"]
    table = report.build_comparison(runs, swept=["model/branches", "trainer"])
    assert table["model/branches"].tolist() == ["TSJ", "TJ", "S"]
    assert table["trainer"].tolist() == ["debug"] * 3


def test_ou_mvlp_runs_use_their_single_rank1_as_headline():
    runs = pd.DataFrame([{"run_id": "x", "status": "FINISHED", "tags.lstc_gait.overrides_json": _tag(dataset="ou_mvlp"),
                          "metrics.test/rank1": 87.5, "metrics.test/mAP": 70.0}])
    table = report.build_comparison(runs)
    assert table.loc[0, "rank-1"] == 87.5 and table.loc[0, report.HEADLINE] == 87.5
    assert table.loc[0, "dataset"] == "ou_mvlp"  # a single job shows all its overrides


def test_empty_runs_give_empty_table():
    assert len(report.build_comparison(pd.DataFrame())) == 0


def test_write_and_plot(tmp_path):
    table = report.build_comparison(_runs())
    csv_path, md_path = report.write_comparison(table, tmp_path, "cmp", title="t")
    back = pd.read_csv(csv_path)
    assert back["run_id"].tolist() == ["a", "b", "c"]
    assert back[report.HEADLINE].iloc[0] == pytest.approx(77.0)
    md = md_path.read_text()
    assert "temporal+joint" in md
    assert "77.00" in md and "FAILED" in md
    png = report.plot_comparison(table, tmp_path / "cmp.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot_comparison(table, tmp_path / "none.png", metric="nope") is None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with an unrelated run and one sweep parent with two children."""
    import mlflow

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'x.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("study", artifact_location=(root / "art").as_uri())
    client.set_terminated(client.create_run(exp, run_name="lonely").info.run_id)
    parent = client.create_run(exp, run_name="sweep", tags={report.PARENT_ROLE_TAG: report.PARENT_ROLE_VALUE,
                                                            report.SWEEP_OVERRIDES_TAG: '["pooling"]'})
    pid = parent.info.run_id
    for num, (pool, nm) in enumerate([("hard", 70.0), ("soft", 60.0)]):
        run = client.create_run(exp, run_name=f"pooling={pool}",
                                tags={"mlflow.parentRunId": pid, "lstc_gait.job_num": str(num),
                                      report.OVERRIDES_TAG: _tag(pooling=pool)})
        for cond, v in (("NM", nm), ("BG", nm - 10), ("CL", nm - 20)):
            client.log_metric(run.info.run_id, f"test/{cond}/rank1", v)
        client.set_terminated(run.info.run_id)
    client.set_terminated(pid)
    return uri, pid


def test_find_parent_and_children(store):
    import mlflow

    uri, pid = store
    before = mlflow.get_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = report.find_parent_run(client)
    assert found["run_id"] == pid and found["experiment_name"] == "study"
    assert report.find_parent_run(client, experiment_name="study")["run_id"] == pid
    with pytest.raises(LookupError, match="no MLflow experiment named 'nope'"):
        report.find_parent_run(client, experiment_name="nope")
    table = report.build_comparison(report.load_child_runs(client, pid), swept=["pooling"])
    assert table["pooling"].tolist() == ["hard", "soft"]
    assert table[report.HEADLINE].tolist() == pytest.approx([60.0, 50.0])
    assert mlflow.get_tracking_uri() == before  # the report never sets MLflow's process-wide URI


def test_report_command(store, tmp_path):
    uri, pid = store
    out = subprocess.run([sys.executable, "-m", "lstc_gait.report", f"tracking.uri={uri}",
                          f"out_dir={tmp_path}"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert pid in out.stdout and "| hard" in out.stdout and "60.00" in out.stdout
    assert pd.read_csv(tmp_path / "comparison.csv")["pooling"].tolist() == ["hard", "soft"]
    assert (tmp_path / "comparison.md").is_file() and (tmp_path / "comparison.png").is_file()



def test_report_unknown_parent_is_a_clear_error(store, tmp_path):
    from hydra import compose, initialize_config_dir

    from lstc_gait.pipelines.report import ReportError
    from lstc_gait.pipelines.report import report as run_report

    uri, _ = store
    with initialize_config_dir(config_dir=str(ROOT / "lstc_gait" / "conf"), version_base="1.3"):
        cfg = compose(config_name="report", overrides=[f"tracking.uri={uri}", "parent_run=0000",
                                                       f"out_dir={tmp_path}"])
    with pytest.raises(ReportError, match="no run with id '0000'"):
        run_report(cfg)
    assert not (tmp_path / "comparison.csv").exists()
    with initialize_config_dir(config_dir=str(ROOT / "lstc_gait" / "conf"), version_base="1.3"):
        cfg = compose(config_name="report", overrides=[f"tracking.uri=sqlite:///{tmp_path / 'none.db'}"])
    with pytest.raises(ReportError, match="no MLflow store"):
        run_report(cfg)
    assert not (tmp_path / "none.db").exists()  # reading never creates a store
    out = subprocess.run([sys.executable, "-m", "lstc_gait.report", f"tracking.uri=sqlite:///{tmp_path / 'none.db'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("lstc_gait.report: error: no MLflow store")
    assert "Traceback" not in out.stderr
