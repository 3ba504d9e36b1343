"""SynthGait: layout, binary frames, determinism, worker independence, caching, and realism ordering."""

from __future__ import annotations

import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lstc_gait.data.synthetic import (
    ALL_TYPES,
    SynthParams,
    casia_b_train_count,
    ensure_synthetic,
    generate_raw,
    generate_walk,
)
from lstc_gait.data.synthetic.kinematics import coefficients_at, evaluate_series, load_kinematics

SMALL = SynthParams(num_subjects=3, types=["nm-01", "bg-01", "cl-01"], views=["000", "090", "144"],
                    frames=10, width=160, height=120, seed=7)
NAME = re.compile(r"^(\d{3})-((?:nm|bg|cl)-\d{2})-(\d{3})-(\d{3})\.png$")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw1")
    n = generate_raw(root, SMALL, workers=1, progress=False)
    assert n == SMALL.num_frames_total()
    return root


def test_kinematics_fourier_evaluation():
    table = load_kinematics()
    # at a class speed the interpolation returns that class's coefficients exactly
    np.testing.assert_allclose(coefficients_at(table.speeds[2]), table.coeffs[2])
    # half-way between two classes: the average
    mid = 0.5 * (table.speeds[0] + table.speeds[1])
    np.testing.assert_allclose(coefficients_at(mid), 0.5 * (table.coeffs[0] + table.coeffs[1]))
    c = table.coeffs[2]
    # t = 0: c0 + sum of cosine terms; the cycle mean is c0
    np.testing.assert_allclose(evaluate_series(c, np.array([0.0]))[0], c[:, 0] + c[:, 1::2].sum(1))
    t = np.arange(100) / 100
    np.testing.assert_allclose(evaluate_series(c, t).mean(0), c[:, 0], atol=1e-9)
    # knee flexion at free speed peaks around 60-70 degrees in swing
    assert 55 < evaluate_series(c, t)[:, 5].max() < 75


def test_raw_layout_and_names(small_raw: Path):
    seqs = sorted(p.relative_to(small_raw).as_posix() for p in small_raw.glob("*/*/*") if p.is_dir())
    expected = sorted(f"{s}/{t}/{v}" for s in ("001", "002", "003") for t in SMALL.types for v in SMALL.views)
    assert seqs == expected
    for seq in seqs:
        names = sorted(p.name for p in (small_raw / seq).iterdir())
        assert len(names) == SMALL.frames
        s, t, v = seq.split("/")
        for i, name in enumerate(names, start=1):
            m = NAME.match(name)
            assert m and m.groups() == (s, t, v, f"{i:03d}"), name
    assert not list(small_raw.rglob(".*tmp*")), "temporary folders left behind"


def test_frames_binary_person_not_centred_and_drifting(small_raw: Path):
    centres = []
    for seq in sorted(p for p in small_raw.glob("*/*/*") if p.is_dir()):
        frames = [np.asarray(Image.open(f)) for f in sorted(seq.iterdir())]
        for f in frames:
            assert f.shape == (SMALL.height, SMALL.width) and f.dtype == np.uint8
            assert set(np.unique(f)) <= {0, 255}
            assert (f > 0).sum() > 40  # a person is there (pretreatment drops sums <= 10000)
        cols = [np.nonzero(f)[1].mean() for f in frames]
        rows = [np.ptp(np.nonzero(f)[0]) for f in frames]
        centres.append(np.mean(cols))
        if seq.name == "090":  # side view: the walker crosses the frame
            assert abs(cols[-1] - cols[0]) > 0.05 * SMALL.width  # ~0.4 m walked in 10 frames
        if seq.name == "000":  # walking towards the camera: the walker grows
            assert np.mean(rows[-3:]) > 1.04 * np.mean(rows[:3])
    off = np.abs(np.array(centres) - SMALL.width / 2)
    assert off.max() > 0.12 * SMALL.width and np.std(centres) > 5.0


def test_deterministic_worker_count_and_subset_independent(small_raw: Path, tmp_path: Path):
    two = tmp_path / "two"
    generate_raw(two, SMALL, workers=2, progress=False)
    reference = _files(small_raw)
    assert _files(two) == reference
    # generating one subject alone gives exactly that subject's frames
    only = tmp_path / "only"
    generate_raw(only, SMALL, workers=1, progress=False, subjects=[2])
    assert _files(only) == {k: v for k, v in reference.items() if k.startswith("002/")}
    # another seed gives other frames
    other = generate_walk(SynthParams(**{**SMALL.to_dict(), "seed": 8}), 1, "nm-01", ["090"])["090"]
    same = generate_walk(SMALL, 1, "nm-01", ["090"])["090"]
    assert not np.array_equal(other, same)
    assert np.array_equal(same, generate_walk(SMALL, 1, "nm-01", ["090"])["090"])


def test_params_validation_and_split_rule():
    assert casia_b_train_count(124) == 74 and casia_b_train_count(24) == 14 and casia_b_train_count(6) == 4
    with pytest.raises(ValueError, match="colour"):
        SynthParams.from_mapping({"num_subjects": 3, "colour": "red"})
    with pytest.raises(ValueError, match="xx-01"):
        SynthParams(types=["xx-01"]).validate()
    with pytest.raises(ValueError, match="views"):
        SynthParams(views=["90"]).validate()
    assert SynthParams.from_mapping(SMALL.to_dict()).key() == SMALL.key()
    assert SynthParams(seed=1).key() != SynthParams(seed=2).key()
    assert SynthParams.casia_b().num_subjects == 124 and list(SynthParams.casia_b().types) == list(ALL_TYPES)


def test_ensure_synthetic_prepares_once_and_reuses(tmp_path: Path):
    from lstc_gait.data import open_cache

    params = SynthParams(num_subjects=2, types=["nm-01", "cl-01"], views=["018", "108"], frames=8,
                         width=160, height=120, seed=3)
    cache_dir = ensure_synthetic(params, tmp_path, workers=1, progress=False)
    cache = open_cache(cache_dir)
    assert len(cache) == 2 * 2 * 2
    idx = cache.index
    assert sorted(idx["subject"].unique()) == ["001", "002"]
    assert sorted(idx["view"].unique()) == ["018", "108"]
    assert (idx["num_frames"] == 8).all()
    frames = cache.frames(0)
    assert frames.shape == (8, 64, 64) and frames.dtype == np.uint8 and frames.max() > 0
    raw_png = next((cache_dir.parent / "raw").rglob("*.png"))
    mtime = raw_png.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = ensure_synthetic(params.to_dict(), tmp_path, workers=2, progress=False)  # mapping form
    assert time.perf_counter() - t0 < 1.0
    assert again == cache_dir and raw_png.stat().st_mtime_ns == mtime
    assert cache_dir.parent.name == f"synthgait-{params.key()}"


# ---- realism: GEI + nearest neighbour, CASIA-B protocol on held-out subjects ---------------------------
GEI_PARAMS = SynthParams(num_subjects=30, views=["000", "054", "090", "126", "180"], frames=20, seed=11)
GEI_SUBJECTS = list(range(casia_b_train_count(30) + 1, 31))  # the 12 test subjects


def _gei_walk(args: tuple) -> tuple:
    from lstc_gait.data.pretreat import pretreat_frame

    subject, seq_type = args
    out = {}
    for view, frames in generate_walk(GEI_PARAMS, subject, seq_type, GEI_PARAMS.views).items():
        kept = [p for p in (pretreat_frame(f) for f in frames) if p is not None]
        out[view] = np.mean(kept, axis=0)[:, 10:54].ravel() / 255.0
    return subject, seq_type, out


def _rank1(gei: dict, probe_types: list[str], gallery_view: str, probe_view: str) -> float:
    gal = [(s, t) for s in GEI_SUBJECTS for t in ("nm-01", "nm-02", "nm-03", "nm-04")]
    prb = [(s, t) for s in GEI_SUBJECTS for t in probe_types]
    g = np.stack([gei[(s, t, gallery_view)] for s, t in gal])
    p = np.stack([gei[(s, t, probe_view)] for s, t in prb])
    d = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    hit = np.array([s for s, _ in gal])[d.argmin(1)] == np.array([s for s, _ in prb])
    return float(hit.mean() * 100)


def test_gei_baseline_orders_conditions_and_views():
    tasks = [(s, t) for s in GEI_SUBJECTS for t in GEI_PARAMS.types]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_gei_walk, tasks, chunksize=6))
    gei = {(s, t, v): x for s, t, walk in results for v, x in walk.items()}
    views = GEI_PARAMS.views
    acc = {}
    for name, types in {"NM": ["nm-05", "nm-06"], "BG": ["bg-01", "bg-02"], "CL": ["cl-01", "cl-02"]}.items():
        same = np.mean([_rank1(gei, types, v, v) for v in views])
        cross = np.mean([_rank1(gei, types, g, p) for p in views for g in views if g != p])
        acc[name] = (same, cross)
    chance = 100.0 / len(GEI_SUBJECTS)
    nm, bg, cl = acc["NM"], acc["BG"], acc["CL"]
    assert nm[0] > bg[0] > cl[0] > 2 * chance, acc
    assert nm[0] >= 70.0, acc
    for same, cross in acc.values():
        assert cross < same - 10.0, acc
    assert nm[1] > 1.5 * chance, acc
