"""Layout readers on tiny generated trees."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lstc_gait.data.layouts import LayoutError, detect_layout, read_partition, scan_root, scan_roots


def _png(path: Path, h: int = 24, w: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w), np.uint8)
    img[4:20, 5:11] = 255
    Image.fromarray(img).save(path)


def test_flat_layout_any_extension_and_sorted_frames(tmp_path):
    root = tmp_path / "flat"
    for name in ("b.png", "a.jpg", "c.bmp"):
        _png(root / "alice" / "walk1" / name)
    _png(root / "bob" / "nm-01-090" / "0001.png")
    (root / "bob" / "nm-01-090" / "notes.txt").write_text("not a frame")
    assert detect_layout(root) == "flat"
    idx = scan_root(root)
    assert list(idx.columns) == ["subject", "type", "view", "seq", "source", "kind"]
    assert idx[["subject", "type", "view", "seq"]].values.tolist() == [
        ["alice", "walk1", "000", "walk1"],
        ["bob", "nm-01", "090", "nm-01-090"],  # a CASIA-style sequence name carries type and view
    ]
    from lstc_gait.data.layouts import list_frames

    assert [Path(p).name for p in list_frames(idx.source[0])] == ["a.jpg", "b.png", "c.bmp"]
    assert [Path(p).name for p in list_frames(idx.source[1])] == ["0001.png"]


def test_casia_b_layout(tmp_path):
    root = tmp_path / "casia"
    for s in ("001", "002"):
        for t in ("nm-01", "cl-02"):
            for v in ("000", "090"):
                _png(root / s / t / v / f"{s}-{t}-{v}-001.png")
    assert detect_layout(root) == "casia_b"
    idx = scan_root(root, "auto")
    assert len(idx) == 8
    row = idx.iloc[-1]
    assert (row.subject, row.type, row.view, row.seq) == ("002", "nm-01", "090", "nm-01")
    assert row.source == str(root / "002" / "nm-01" / "090")
    assert set(idx.kind) == {"frames"}


def test_ou_mvlp_layout(tmp_path):
    root = tmp_path / "oumvlp"
    for v in ("000", "015"):
        for q in ("00", "01"):
            for s in ("00001", "00002"):
                _png(root / f"Silhouette_{v}-{q}" / s / "0001.png")
    (root / "README").mkdir()  # unrelated folders are ignored
    assert detect_layout(root) == "ou_mvlp"
    idx = scan_root(root)
    assert len(idx) == 8
    sel = idx[(idx.subject == "00002") & (idx.view == "015") & (idx.type == "01")]
    assert len(sel) == 1 and sel.iloc[0].seq == "01"
    assert sel.iloc[0].source == str(root / "Silhouette_015-01" / "00002")


def test_opengait_layout_and_partition(tmp_path):
    root = tmp_path / "og"
    for s in ("001", "002"):
        d = root / s / "nm-01" / "090"
        d.mkdir(parents=True)
        with open(d / f"{s}-nm-01-090.pkl", "wb") as fh:
            pickle.dump(np.zeros((5, 64, 64), np.uint8), fh)
    assert detect_layout(root) == "opengait"
    idx = scan_root(root)
    assert idx.kind.tolist() == ["pickle", "pickle"]
    assert idx.source.tolist()[0].endswith("001-nm-01-090.pkl")
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"TRAIN_SET": ["001"], "TEST_SET": [2]}))
    assert read_partition(part) == (["001"], ["2"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"TRAIN_SET": []}))
    with pytest.raises(ValueError, match="TEST_SET"):
        read_partition(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_partition(tmp_path / "nope.json")


def test_several_roots_one_per_camera(tmp_path):
    for cam in ("cam1", "cam2"):
        _png(tmp_path / cam / "p1" / "s1" / "f.png")
    idx = scan_roots([tmp_path / "cam1", tmp_path / "cam2"], "flat")
    assert idx.view.tolist() == ["cam1", "cam2"]
    assert idx.subject.tolist() == ["p1", "p1"]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_root"):
        scan_root(tmp_path / "missing_root")
    junk = tmp_path / "junk"
    (junk / "a").mkdir(parents=True)
    (junk / "a" / "x.txt").write_text("x")
    with pytest.raises(LayoutError) as err:
        detect_layout(junk)
    msg = str(err.value)
    assert str(junk) in msg and all(n in msg for n in ("flat", "casia_b", "ou_mvlp", "opengait"))
    with pytest.raises(LayoutError, match="unknown layout"):
        scan_root(junk, "nonsense")


def test_named_layout_that_does_not_fit_names_the_right_one(tmp_path):
    root = tmp_path / "casia"
    _png(root / "001" / "nm-01" / "090" / "f.png")
    with pytest.raises(LayoutError, match=r"does not follow the flat layout.*casia_b"):
        scan_root(root, "flat")
