"""prepare_cache end to end: bad input is skipped and reported, resume, atomicity, the Hydra entry."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lstc_gait.data.prepare as prep
from lstc_gait.data import CacheError, open_cache, prepare_cache
from lstc_gait.data.pretreat import pretreat_frame


def _frame(shift: int, h: int = 120, w: int = 160) -> np.ndarray:
    img = np.zeros((h, w), np.uint8)
    img[20:100, 40 + shift : 60 + shift] = 255
    return img


def _write_seq(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n):
        Image.fromarray(_frame(start + f)).save(folder / f"{f:03d}.png")


@pytest.fixture()
def casia_tree(tmp_path):
    root = tmp_path / "raw"
    for s in ("001", "002"):
        for t in ("nm-01", "nm-02"):
            for v in ("000", "090"):
                _write_seq(root / s / t / v, 6, start=int(s))
    bad = root / "001" / "nm-01" / "000"
    (bad / "007.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt frame
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(bad / "008.png")  # empty frame
    Image.fromarray(_frame(0, h=60, w=80)).save(bad / "009.png")  # odd size
    (root / "002" / "nm-02" / "018").mkdir()  # empty folder
    _write_seq(root / "002" / "nm-02" / "036", 2)  # too short
    return root


def test_prepare_end_to_end_with_bad_input(casia_tree, tmp_path):
    cache_dir = tmp_path / "cache"
    summary = prepare_cache([casia_tree], "auto", cache_dir, workers=2, min_frames=3, progress=False)
    cache = open_cache(cache_dir)
    assert len(cache) == 8 and summary.sequences == 8
    assert summary.frames == 48 == cache.total_frames
    assert list(cache.index.columns) == ["subject", "type", "view", "seq", "source", "num_frames"]
    assert cache.index.subject.tolist()[:2] == ["001", "001"]  # zero-padded ids stay strings
    assert all(isinstance(cache.index.at[0, c], str) for c in ("subject", "type", "view", "seq", "source"))
    assert (cache.index.num_frames == 6).all()
    # frames equal the pretreatment of the source images, in name order
    first = cache.frames(0)
    assert first.shape == (6, 64, 64) and first.dtype == np.uint8
    assert np.array_equal(first[1], pretreat_frame(_frame(2)))
    report = pd.read_csv(summary.report_path, dtype=str, keep_default_na=False)
    frames = report[report.level == "frame"]
    assert sorted(Path(p).name for p in frames.path) == ["007.png", "008.png", "009.png"]
    reasons = " ".join(frames.reason)
    assert "corrupt" in reasons and "empty frame" in reasons and "unexpected image size 80x60" in reasons
    seqs = report[report.level == "sequence"]
    assert sorted(Path(p).name for p in seqs.path) == ["018", "036"]
    assert any("no image files" in r for r in seqs.reason) and any("min_frames=3" in r for r in seqs.reason)
    assert summary.skipped_sequences == 2 and summary.skipped_frames == 3
    assert set(report.cause) == {"unreadable image", "empty frame", "frame size differs from the sequence's",
                                 "no image files", "fewer than min_frames=3 usable frames"}


def test_console_summary_groups_skips_by_cause(casia_tree, tmp_path, capsys):
    for f in range(3):  # two more empty frames: the empty-frame group counts 3
        Image.fromarray(np.zeros((120, 160), np.uint8)).save(casia_tree / "001" / "nm-02" / "090" / f"e{f}.png")
    summary = prepare_cache([casia_tree], "casia_b", tmp_path / "cache", workers=0, min_frames=3, progress=True)
    err = capsys.readouterr().err
    assert str(summary) in err
    groups = {(g.level, g.cause): g for g in summary.skips}
    assert groups[("frame", "empty frame")].count == 4
    assert groups[("frame", "empty frame")].example.endswith(".png")
    assert groups[("sequence", "no image files")].example == str(casia_tree / "002" / "nm-02" / "018")
    lines = str(summary).splitlines()
    assert lines[1] == "skipped 2 sequences:" and "skipped 6 frames:" in lines
    empty = next(line for line in lines if "empty frame" in line)
    assert empty.split()[0] == "4" and "e.g. " in empty  # count, cause, one example path
    assert lines[-1] == f"every skip, with its reason: {summary.report_path}"
    assert [g.cause for g in summary.skips if g.level == "frame"][0] == "empty frame"  # most frequent first


def test_empty_result_is_one_line_naming_causes_and_report(tmp_path):
    from lstc_gait.data.cache import EmptyCacheError
    from lstc_gait.data.config import build_datasets

    root = tmp_path / "raw"
    for s in ("001", "002"):
        d = root / s / "nm-01" / "090"
        d.mkdir(parents=True)
        for f in range(4):
            Image.new("CMYK", (32, 32)).save(d / f"{f}.tif")  # a mode no mask has
    cache_dir = tmp_path / "cache"
    with pytest.raises(EmptyCacheError) as info:
        prepare_cache(root, "casia_b", cache_dir, workers=0, min_frames=1, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "no usable sequence" in msg and str(root) in msg
    assert "unsupported image mode CMYK (8, e.g. " in msg and "fewer than min_frames=1 usable frames (2, e.g." in msg
    assert msg.endswith(str(cache_dir / "prepare_report.csv"))
    assert isinstance(info.value, CacheError) and isinstance(info.value, ValueError)
    # the later stages name the empty cache too, never "empty train set"
    cache = open_cache(cache_dir)
    with pytest.raises(EmptyCacheError, match="unsupported image mode CMYK.*prepare_report.csv"):
        build_datasets(cache, {"name": "x", "root": str(root), "split": "casia_b"})
    from lstc_gait.data import split_index, split_subjects

    with pytest.raises(EmptyCacheError, match="cache is empty"):
        split_index(cache.index, "random")
    with pytest.raises(EmptyCacheError, match="cache is empty"):  # train.py splits subjects directly
        split_subjects(cache.index.subject, "casia_b")


def test_resume_skips_done_and_keeps_report(casia_tree, tmp_path):
    cache_dir = tmp_path / "cache"
    prepare_cache(casia_tree, "casia_b", cache_dir, workers=1, min_frames=3, progress=False)
    before = open_cache(cache_dir)
    _write_seq(casia_tree / "003" / "nm-01" / "000", 4)
    s2 = prepare_cache(casia_tree, "casia_b", cache_dir, workers=1, min_frames=3, progress=False)
    # only the new sequence and the two bad ones (retried every run) are processed again
    assert s2.processed == 3 and s2.reused == 8 and s2.sequences == 9
    after = open_cache(cache_dir)
    assert np.array_equal(after.frames(0), before.frames(0))
    assert after.index.subject.tolist()[-1] == "003"
    report = pd.read_csv(s2.report_path, dtype=str, keep_default_na=False)
    assert (report.level == "frame").sum() == 3  # frame rows of reused sequences carried over
    assert not (cache_dir / "entries").exists() and len(list(cache_dir.glob("pack-*"))) == 1


def test_interrupted_run_never_reads_as_valid(casia_tree, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    real = prep.process_sequence
    calls = {"n": 0}

    def dying(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(prep, "process_sequence", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(casia_tree, "casia_b", cache_dir, workers=1, min_frames=3, progress=False)
    with pytest.raises(CacheError, match="not a finished cache"):
        open_cache(cache_dir)
    entries = cache_dir / "entries"
    done = sorted(p.stem for p in entries.glob("*.json"))
    assert len(done) == 3
    # a half-written entry (data without its JSON marker, and a stale temp file) is redone
    (entries / "ffffffffffffffffffff.npy").write_bytes(b"garbage")
    (entries / f"{done[0]}.npy.tmp-1").write_bytes(b"partial")
    # corrupt one finished entry's data: it must be detected and redone, not packed
    np.save(entries / f"{done[1]}.npy", np.zeros((2, 64, 64), np.uint8))
    monkeypatch.setattr(prep, "process_sequence", real)
    s = prepare_cache(casia_tree, "casia_b", cache_dir, workers=1, min_frames=3, progress=False)
    assert s.reused == 2 and s.processed == 8  # 10 sequences in the tree (8 good, 2 bad) - 2 valid entries
    cache = open_cache(cache_dir)
    assert len(cache) == 8 and (cache.index.num_frames == 6).all()


def test_interrupted_repack_keeps_previous_cache(casia_tree, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    prepare_cache(casia_tree, "casia_b", cache_dir, workers=1, min_frames=3, progress=False)
    first = open_cache(cache_dir).frames(3).copy()
    _write_seq(casia_tree / "004" / "nm-01" / "000", 5)

    def broken_pack(*args, **kwargs):
        (cache_dir / "pack-deadbeef0000").mkdir()
        (cache_dir / "pack-deadbeef0000" / "frames.u8").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(prep, "write_pack", broken_pack)
    with pytest.raises(OSError):
        prepare_cache(casia_tree, "casia_b", cache_dir, workers=1, min_frames=3, progress=False)
    cache = open_cache(cache_dir)  # the previous pack is still the valid one
    assert len(cache) == 8 and np.array_equal(cache.frames(3), first)


class _CallsGetcwd:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_opengait_pickles_validated(tmp_path):
    root = tmp_path / "og"
    good = np.random.default_rng(0).integers(0, 256, (7, 64, 64), dtype=np.uint8)
    items = {
        ("001", "nm-01", "000"): good,
        ("002", "nm-01", "000"): np.zeros((7, 64, 32), np.uint8),  # wrong shape
        ("003", "nm-01", "000"): np.full((7, 64, 64), 300.0, np.float32),  # float, neither [0, 1] nor 0..255
    }
    for (s, t, v), arr in items.items():
        d = root / s / t / v
        d.mkdir(parents=True)
        with open(d / "x.pkl", "wb") as fh:
            pickle.dump(arr, fh)
    d = root / "004" / "nm-01" / "000"
    d.mkdir(parents=True)
    (d / "x.pkl").write_bytes(b"not a pickle")
    d = root / "005" / "nm-01" / "000"
    d.mkdir(parents=True)
    (d / "x.pkl").write_bytes(pickle.dumps(_CallsGetcwd()))  # a pickle that would run code
    s = prepare_cache(root, "opengait", tmp_path / "c", workers=1, min_frames=1, progress=False)
    cache = open_cache(tmp_path / "c")
    assert len(cache) == 1 and np.array_equal(cache.frames(0), good)  # taken as already pretreated
    assert s.skipped_sequences == 4
    reasons = " ".join(pd.read_csv(s.report_path, dtype=str).reason)
    assert "(7, 64, 32)" in reasons and "float32" in reasons and "unreadable pickle" in reasons
    assert "refusing posix.getcwd" in reasons


def test_prepare_entry_point(casia_tree, tmp_path):
    cache_dir = tmp_path / "cli_cache"
    cmd = [sys.executable, "-m", "lstc_gait.prepare", "dataset=casia_b", f"dataset.root={casia_tree}",
           f"dataset.cache_dir={cache_dir}", "progress=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(open_cache(cache_dir)) == 8
    bad = subprocess.run([*cmd[:4], f"dataset.root={tmp_path / 'nowhere'}", *cmd[5:]],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr
    # nothing usable: one error line naming the cause and the report, no traceback
    (tmp_path / "blank" / "001" / "nm-01" / "090").mkdir(parents=True)
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(tmp_path / "blank" / "001" / "nm-01" / "090" / "1.png")
    empty = subprocess.run([*cmd[:4], f"dataset.root={tmp_path / 'blank'}", f"dataset.cache_dir={tmp_path / 'c2'}",
                            *cmd[5:]], capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and "Traceback" not in empty.stderr
    (line,) = [x for x in empty.stderr.splitlines() if "no usable sequence" in x and "error" in x]
    assert "empty frame (1, e.g." in line and line.endswith("prepare_report.csv")


def test_resolve_cache_prepares_once_then_reuses(casia_tree, tmp_path):
    from lstc_gait.data.cache import read_meta
    from lstc_gait.data.config import resolve_cache

    cfg = {"name": "casia_b", "layout": "casia_b", "root": str(casia_tree), "workers": 1, "min_frames": 3}
    path = resolve_cache(cfg, tmp_path / "data", progress=False)
    assert path.parent == tmp_path / "data" / "cache" and path.name.startswith("casia_b-")
    pack = read_meta(path)["pack"]
    assert resolve_cache(cfg, tmp_path / "data", progress=False) == path
    assert read_meta(path)["pack"] == pack and len(open_cache(path)) == 8
    # another min_frames is another preparation of the same cache folder (here: nothing left)
    with pytest.raises(CacheError, match="no usable sequence.*fewer than min_frames=7"):
        resolve_cache({**cfg, "min_frames": 7}, tmp_path / "data", progress=False)
    assert len(open_cache(path)) == 0
