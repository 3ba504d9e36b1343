"""The one evaluator: every table states its own misses policy, in training and in the evaluate command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstc_gait.evaluation import read_table
from lstc_gait.evaluation.evaluator import Evaluator, TestRows, TrainingEvaluation, misses_policy


def _ou_case():
    """4 subjects x 3 views x seq 00/01; subject 0 has no seq 01 at view 030 (so the two OU-MVLP
    rank-1 tables differ: misses counted 87.5 at probe views 000/015, excluded 100)."""
    views = ["000", "015", "030"]
    emb, subj, types, vs = [], [], [], []
    for s in range(4):
        for vi, v in enumerate(views):
            for seq in ("00", "01"):
                if s == 0 and v == "030" and seq == "01":
                    continue
                x = np.zeros(16)
                x[s] = 1
                x[4 + vi * 4 + s] = 1
                emb.append(x)
                subj.append(f"{2 * s + 2:05d}")
                types.append(seq)
                vs.append(v)
    return np.asarray(emb, np.float32), subj, types, vs


class _FakeCache:
    def __init__(self, subj, types, views):
        self.index = pd.DataFrame({"subject": subj, "type": types, "view": views, "seq": types})


class _Precomputed(Evaluator):
    """An evaluator whose model pass returns fixed embeddings (the protocol and tables are real)."""

    def __init__(self, emb, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._emb = emb

    def embed(self, model):
        return self._emb


class _Tracker:
    def __init__(self):
        self.tables, self.metrics, self.root = {}, {}, []

    def log_table(self, df, name, files=None, **kwargs):
        self.tables[name] = files

    def log_artifact(self, path, artifact_path=None):
        if artifact_path is None:
            self.root.append(Path(path).name)

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


def _check_ou_headers(folder):
    counted, h_counted = read_table(folder / "rank1.csv")
    excluded, h_excluded = read_table(folder / "rank1_excl_missing.csv")
    assert h_counted["protocol"] == h_excluded["protocol"] == "ou_mvlp"
    assert h_counted["misses_counted"].startswith("yes")
    assert h_excluded["misses_counted"].startswith("no")  # the bug: training wrote "True" here
    assert counted.loc["rank1", "000"] == pytest.approx(87.5)
    assert excluded.loc["rank1", "000"] == pytest.approx(100.0)
    assert "misses_counted: no" in (folder / "rank1_excl_missing.md").read_text()


def test_training_tables_state_the_ou_mvlp_misses_policy(tmp_path):
    emb, subj, types, views = _ou_case()
    rows = TestRows(_FakeCache(subj, types, views), np.arange(len(subj)), split="ou_mvlp (4 test subjects)")
    tracker = _Tracker()
    hook = TrainingEvaluation(_Precomputed(emb, "ou_mvlp", "euclidean", rows, tracker=tracker, show=False),
                              tmp_path, "EMA")
    metrics = hook(model=None, step=5)
    assert metrics["rank1_excl_missing"] == pytest.approx(100.0)
    _check_ou_headers(tmp_path / "tables" / "step_0000005")
    _check_ou_headers(tmp_path / "tables")  # the latest copy, which is the one logged
    assert tracker.tables["rank1_excl_missing"][0] == tmp_path / "tables" / "rank1_excl_missing.csv"
    assert tracker.metrics["test/rank1_excl_missing"] == pytest.approx(100.0)
    # the headline is OU-MVLP's rank-1 with misses counted
    assert tracker.metrics["test/mean/rank1"] == pytest.approx(tracker.metrics["test/rank1"])
    # per-view tables also at the artifact root (MLflow's compare view), cross-view matrices not
    assert sorted(tracker.root) == ["rank1.md", "rank1_excl_missing.md"]
    _, header = read_table(tmp_path / "tables" / "rank1.csv")
    assert header["checkpoint"] == "EMA weights at step 5" and header["split"] == "ou_mvlp (4 test subjects)"


def test_evaluate_embeddings_writes_the_same_headers(tmp_path):
    emb, subj, types, views = _ou_case()
    result = Evaluator("ou_mvlp", show=False).evaluate_embeddings(emb, subj, types, views, "x.pt", "ou:test",
                                                                 out_dirs=[tmp_path])
    _check_ou_headers(tmp_path)
    assert result.header == {"protocol": "ou_mvlp", "distance": "euclidean", "checkpoint": "x.pt",
                             "split": "ou:test"}


def test_misses_policy():
    assert misses_policy("casia_b", "rank1").startswith("yes")
    assert misses_policy("ou_mvlp", "rank1_excl_missing").startswith("no")
    assert misses_policy("ou_mvlp", "crossview_excl_missing").startswith("no")
    assert misses_policy("retrieval", "retrieval").startswith("n/a")
