"""Result tables: CSV + Markdown with headers, atomic writes, round trip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lstc_gait.evaluation.tables import format_table, read_table, write_table


def _table() -> pd.DataFrame:
    df = pd.DataFrame([[97.25, 95.0, np.nan], [88.125, 80.0, 84.0625]], index=["NM", "BG"],
                      columns=["000", "018", "036"])
    df["mean"] = df.mean(axis=1)
    return df


HEADER = {"protocol": "casia_b", "distance": "euclidean", "checkpoint": "runs/x/ckpt.pt",
          "split": "test (075-124)", "misses_counted": True}


def test_csv_and_markdown_round_trip(tmp_path):
    df = _table()
    csv_path, md_path = write_table(df, tmp_path / "sub" / "rank1", HEADER)
    assert csv_path.name == "rank1.csv" and md_path.name == "rank1.md"
    lines = csv_path.read_text().splitlines()
    assert lines[:5] == ["# protocol: casia_b", "# distance: euclidean", "# checkpoint: runs/x/ckpt.pt",
                         "# split: test (075-124)", "# misses_counted: True"]
    back = pd.read_csv(csv_path, comment="#", index_col=0)
    assert list(back.columns) == ["000", "018", "036", "mean"]  # view labels stay strings
    assert list(back.index) == ["NM", "BG"]
    np.testing.assert_allclose(back.to_numpy(), df.to_numpy(), atol=1e-4)
    again, header = read_table(csv_path)
    assert header["protocol"] == "casia_b" and header["misses_counted"] == "True"
    assert math.isnan(again.loc["NM", "036"])
    md = md_path.read_text()
    head, table = md.split("\n\n", 1)
    assert "protocol: casia_b" in head and "split: test (075-124)" in head
    assert "| NM" in table and "97.25" in table and "| -" not in table.splitlines()[0]
    assert " - |" in table  # NaN printed as '-'
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.startswith(".")]  # no tmp files left


def test_missing_header_keys_and_string_header(tmp_path):
    csv_path, md_path = write_table(_table(), tmp_path / "t.csv", {"protocol": "ou_mvlp"})
    assert csv_path.name == "t.csv"
    _, header = read_table(csv_path)
    assert header["distance"] == "n/a" and header["checkpoint"] == "n/a" and header["misses_counted"] == "n/a"
    csv2, _ = write_table(_table(), tmp_path / "s", "protocol: ou_mvlp | metric: cosine | misses: excluded")
    _, header2 = read_table(csv2)
    assert header2["distance"] == "cosine" and header2["misses_counted"] == "excluded"
    with pytest.raises(TypeError):
        write_table({"a": 1}, tmp_path / "x", HEADER)
    with pytest.raises(ValueError, match="header key"):
        write_table(_table(), tmp_path / "y", {"bad:key": 1})


def test_overwrite_is_atomic_replacement(tmp_path):
    first, _ = write_table(_table(), tmp_path / "r", HEADER)
    df2 = _table() * 0 + 1
    second, _ = write_table(df2, tmp_path / "r", HEADER)
    assert first == second
    back, _ = read_table(second)
    assert (back.fillna(1).to_numpy() == 1).all()


def test_format_table_aligns_and_rounds():
    text = format_table(_table())
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert lines[0].split("|")[2].strip() == "000" and lines[-1].split("|")[-2].strip() == "84.06"
    assert "88.12" in text or "88.13" in text
