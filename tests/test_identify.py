"""Silhouettes from video, the gallery, enrolment and open-set identification (lstc_gait.identify).

Clips are SynthGait walkers rendered over a static textured scene with sensor noise and written as
MP4 (mp4v) with OpenCV, so the extraction sees real codec artefacts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lstc_gait.identify import (
    Gallery,
    IdentifyError,
    enroll,
    extract_silhouettes,
    identify,
    render_clip,
    write_video,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL_FIXTURE = ROOT / "tests" / "fixtures" / "identify_side_view.pt"
TINY_MODEL = dict(base_channels=8, num_stripes=4, embedding_dim=32)

pytestmark = pytest.mark.usefixtures("one_thread")


def _iou(masks: np.ndarray, truth: np.ndarray) -> float:
    inter = np.logical_and(masks, truth).sum()
    return float(inter / np.logical_or(masks, truth).sum())


def _clip_iou(sil, clip) -> tuple[float, int]:
    walking = [t for t in range(len(clip.masks)) if clip.masks[t].any()]
    got = dict(zip(sil.frame_indices.tolist(), sil.masks))
    kept = [t for t in walking if t in got]
    return float(np.mean([_iou(got[t] > 0, clip.masks[t]) for t in kept])), len(kept)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Side-view clips of SynthGait walkers 1-4 (three walks each) and truths, written once."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for s in (1, 2, 3, 4):
        for t in ("nm-01", "nm-02", "nm-03"):
            clip = render_clip((s,), view="090", frames=24, lead_in=4, seq_type=t)
            out[(s, t)] = (write_video(root / f"walker{s}-{t}.mp4", clip.frames, clip.fps), clip)
    return out


def _random_checkpoint(path: Path, seed: int) -> Path:
    from lstc_gait.engine.checkpoint import save_checkpoint
    from lstc_gait.models import build_gait_model

    torch.manual_seed(seed)
    model = build_gait_model(0, **TINY_MODEL)
    save_checkpoint({"model": model.state_dict(),
                     "config": {"model": {"_target_": "lstc_gait.models.build_gait_model", **TINY_MODEL}}}, path)
    return path


# --------------------------------------------------------------------------------------- silhouettes


@pytest.mark.parametrize("view,lead_in,use_image", [("090", 4, False), ("000", 6, False), ("180", 0, True)])
def test_silhouettes_match_rendered_masks(tmp_path, view, lead_in, use_image):
    """IoU >= 0.9 against the truth: side view from the clip; front/back from the lead-in or an image."""
    import cv2

    clip = render_clip((2,), view=view, frames=20, lead_in=lead_in, seq_type="nm-02")
    video = write_video(tmp_path / "clip.mp4", clip.frames, clip.fps)
    bg = None
    if use_image:
        bg = tmp_path / "empty.png"
        cv2.imwrite(str(bg), clip.background[:, :, ::-1])
    sil = extract_silhouettes(video, bg)
    iou, kept = _clip_iou(sil, clip)
    assert sil.kind == "rgb" and sil.background == ("image" if use_image else "leadin" if lead_in else "median")
    assert kept >= 18 and iou >= 0.9, (iou, kept)
    assert sil.dropped["nobody"] == lead_in  # the empty lead-in frames are dropped


def test_mask_video_is_used_directly(tmp_path, clips):
    _, clip = clips[(1, "nm-01")]
    video = write_video(tmp_path / "masks.mp4", clip.masks.astype(np.uint8) * 255, clip.fps)
    sil = extract_silhouettes(video)
    iou, kept = _clip_iou(sil, clip)
    assert sil.kind == "mask" and kept >= 22 and iou >= 0.9


def test_silhouettes_cli_writes_frames_prepare_reads(tmp_path, clips):
    video, clip = clips[(1, "nm-01")]
    out = tmp_path / "sil"
    run = subprocess.run([sys.executable, "-m", "lstc_gait.silhouettes", f"input={video}", f"out={out}"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    frames = sorted(out.glob("*.png"))
    assert len(frames) >= 22 and frames[0].name == "00004.png"  # named by video frame, lead-in dropped
    assert json.loads((out / "silhouettes.json").read_text())["background"] == "leadin"
    from lstc_gait.data.frames import read_mask
    from lstc_gait.data.pretreat import pretreat_frame

    assert pretreat_frame(read_mask(frames[0])).shape == (64, 64)
    again = subprocess.run([sys.executable, "-m", "lstc_gait.silhouettes", f"input={video}", f"out={out}"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 2 and "not empty" in again.stderr


def _one_line_error(argv: list[str], *expect: str) -> str:
    run = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=300, cwd=ROOT)
    err = run.stderr.strip()
    assert run.returncode == 2, (run.stdout, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"{argv[0]}: error: "), err
    for e in expect:
        assert e in err, err
    return err


def test_bad_videos_one_line_error_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    _one_line_error(["lstc_gait.silhouettes", f"input={garbage}", f"out={tmp_path / 'o1'}"], str(garbage))
    _one_line_error(["lstc_gait.silhouettes", f"input={tmp_path / 'missing.mp4'}", f"out={tmp_path / 'o2'}"],
                    "missing.mp4", "no such")
    empty = tmp_path / "empty.mp4"
    write_video(empty, np.zeros((0, 120, 160, 3), np.uint8))
    with pytest.raises(IdentifyError, match="empty.mp4"):
        extract_silhouettes(empty)
    nobody = render_clip((1,), frames=0, lead_in=20)  # the scene with sensor noise, nobody walks
    video = write_video(tmp_path / "nobody.mp4", nobody.frames, nobody.fps)
    with pytest.raises(IdentifyError, match=r"nobody\.mp4: no usable silhouettes: nobody walks through it"):
        extract_silhouettes(video)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_several_people_and_moving_camera_refused(tmp_path):
    two = render_clip((1, 2), frames=24, lead_in=0)
    video = write_video(tmp_path / "two.mp4", two.frames, two.fps)
    with pytest.raises(IdentifyError, match="several people"):
        extract_silhouettes(video)
    pan = render_clip((1,), frames=24, lead_in=4, pan_px_per_frame=6.0)
    video = write_video(tmp_path / "pan.mp4", pan.frames, pan.fps)
    with pytest.raises(IdentifyError, match="camera moves"):
        extract_silhouettes(video)


# ------------------------------------------------------------------------------------------ gallery


def _gallery_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".lock"}


def test_gallery_no_op_foreign_checkpoint_missing_file_and_crash_keep_entries(tmp_path, clips, monkeypatch):
    ck_a = _random_checkpoint(tmp_path / "a.pt", 0)
    ck_b = _random_checkpoint(tmp_path / "b.pt", 1)
    gal = tmp_path / "gallery"
    rep = enroll(ck_a, gal, clips[(1, "nm-01")][0], subject="1", device="cpu")
    assert len(rep.added) == 1 and rep.threshold is None  # one subject: nothing to calibrate yet
    entry = Gallery.open(gal).entries[0]
    assert set(entry) >= {"subject", "source", "content_hash", "frames_used", "time"}
    before = _gallery_bytes(gal)
    # the same content under another name and folder: a no-op
    copy = tmp_path / "elsewhere" / "renamed.mp4"
    copy.parent.mkdir()
    shutil.copy(clips[(1, "nm-01")][0], copy)
    rep = enroll(ck_a, gal, copy, subject="1", device="cpu")
    assert rep.added == [] and rep.skipped == [str(copy)] and _gallery_bytes(gal) == before
    # another checkpoint refuses to mix
    with pytest.raises(IdentifyError, match="cannot be mixed"):
        enroll(ck_b, gal, clips[(2, "nm-01")][0], subject="2", device="cpu")
    # a CSV naming a missing file: error naming it, nothing enrolled (not even the good rows)
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,subject\n{clips[(2, 'nm-01')][0]},2\nnot_there.mp4,3\n")
    with pytest.raises(IdentifyError, match="not_there.mp4"):
        enroll(ck_a, gal, csv, device="cpu")
    assert _gallery_bytes(gal) == before
    # a crash while writing keeps the previous gallery readable and complete
    from lstc_gait.identify import gallery as G

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(G, "_save_npy", boom)
    with pytest.raises(OSError, match="disk full"):
        enroll(ck_a, gal, clips[(2, "nm-01")][0], subject="2", device="cpu")
    monkeypatch.undo()
    assert _gallery_bytes(gal) == before and len(Gallery.open(gal)) == 1


def test_enroll_identify_cli_errors_leave_gallery_unchanged(tmp_path, clips):
    ck_a = _random_checkpoint(tmp_path / "a.pt", 0)
    ck_b = _random_checkpoint(tmp_path / "b.pt", 1)
    gal = tmp_path / "gallery"
    enroll(ck_a, gal, clips[(1, "nm-01")][0], subject="1", device="cpu")
    enroll(ck_a, gal, clips[(2, "nm-01")][0], subject="2", device="cpu")
    before = _gallery_bytes(gal)
    _one_line_error(["lstc_gait.enroll", f"checkpoint={ck_b}", f"gallery={gal}", f"input={clips[(3, 'nm-01')][0]}",
                     "subject=3"], str(gal), "cannot be mixed")
    garbage = tmp_path / "broken.avi"
    garbage.write_bytes(b"RIFF....AVI garbage")
    _one_line_error(["lstc_gait.enroll", f"checkpoint={ck_a}", f"gallery={gal}", f"input={garbage}", "subject=3"],
                    str(garbage))
    csv = tmp_path / "probes.csv"
    csv.write_text("path\ngone.mp4\n")
    _one_line_error(["lstc_gait.identify", f"gallery={gal}", f"input={csv}", f"out={tmp_path / 'o.csv'}"],
                    "gone.mp4")
    _one_line_error(["lstc_gait.identify", f"gallery={gal}", f"input={clips[(3, 'nm-01')][0]}",
                     f"out={tmp_path / 'o.csv'}", f"checkpoint={ck_b}"], str(ck_b), "not the checkpoint")
    assert _gallery_bytes(gal) == before and not (tmp_path / "o.csv").exists()


# ----------------------------------------------------------------------------------------- round trip


def test_enroll_identify_round_trip_and_unknown_rejected(tmp_path, clips):
    """Walkers 1-3 enrolled from two side-view videos each, a third video of each and of walker 4
    (never enrolled) identified, through the commands. The model (tests/fixtures/identify_side_view.pt)
    is a small LSTC trained 300 steps on SynthGait seed 7 (other people than these seed-0 walkers):
    ``python -m lstc_gait.train dataset.synthetic.num_subjects=48 dataset.synthetic.seed=7
    'dataset.synthetic.types=[nm-01,...,nm-06]' 'dataset.synthetic.views=["072","090","108"]'
    trainer.max_steps=300``, EMA weights kept."""
    import pandas as pd

    gal = tmp_path / "gallery"
    enrol_csv = tmp_path / "people.csv"
    enrol_csv.write_text("path,subject\n" + "".join(f"{clips[(s, t)][0]},walker{s}\n" for s in (1, 2, 3)
                                                   for t in ("nm-01", "nm-02")))
    run = subprocess.run([sys.executable, "-m", "lstc_gait.enroll", f"checkpoint={MODEL_FIXTURE}", f"gallery={gal}",
                          f"input={enrol_csv}", "device=cpu"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    meta = json.loads((gal / "gallery.json").read_text())
    assert len(meta["entries"]) == 6 and meta["metric"] == "euclidean" and len(meta["checkpoint"]["sha256"]) == 64
    assert meta["threshold"]["far"] == 0.01 and meta["threshold"]["impostor_pairs"] == 12
    assert "threshold" in run.stdout

    probes = tmp_path / "probes.csv"
    probes.write_text("path\n" + "".join(f"{clips[(s, 'nm-03')][0]}\n" for s in (1, 2, 3, 4)))
    out = tmp_path / "result.csv"
    run = subprocess.run([sys.executable, "-m", "lstc_gait.identify", f"gallery={gal}", f"input={probes}",
                          f"out={out}", "top_k=2", "device=cpu"], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert out.read_text().splitlines()[0] == "probe,rank,subject,distance,accepted"
    table = pd.read_csv(out)
    assert len(table) == 8 and table.groupby("probe")["rank"].apply(list).map(lambda r: r == [1, 2]).all()
    top1 = table[table["rank"] == 1].set_index("probe")
    for s in (1, 2, 3):
        row = top1.loc[str(clips[(s, "nm-03")][0])]
        assert row["subject"] == f"walker{s}" and bool(row["accepted"]), row
    assert not bool(top1.loc[str(clips[(4, "nm-03")][0])]["accepted"])  # never enrolled: rejected
    assert not table["accepted"][table["rank"] == 2].any()
    assert "walker1" in run.stdout and "threshold" in run.stdout

    # library: a fixed threshold; identification never changes the entries
    res = identify(gal, clips[(1, "nm-03")][0], None, top_k=5, threshold=1e6, device="cpu")
    assert [r["rank"] for r in res.rows] == [1, 2, 3] and all(r["accepted"] for r in res.rows)
    assert len(Gallery.open(gal)) == 6


def test_part_embeddings_keep_their_shape_and_part_wise_distance(tmp_path):
    """A part-embedding model's (N, D, P) gallery round-trips and is compared part by part."""
    from lstc_gait.evaluation.metrics import pairwise_distance
    from lstc_gait.identify.gallery import Gallery
    from lstc_gait.identify.pipeline import _distances

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 5, 4)).astype(np.float32)  # (N, D, P)
    gal = Gallery(tmp_path / "g", {"path": "m.pt", "sha256": "x"}, None, "euclidean")
    gal.add(emb, [{"subject": s, "content_hash": f"h{s}"} for s in "abc"])
    gal.save()
    back = Gallery.open(tmp_path / "g")
    assert back.item_embeddings.shape == (3, 5, 4)
    np.testing.assert_array_equal(back.item_embeddings, emb)
    probe = emb[:1] + 0.1
    d = _distances(probe, back.item_embeddings, back.metric)
    expected = pairwise_distance(probe, emb, "euclidean").numpy()
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    # part-wise: the mean over parts of per-part distances, not the distance of flattened vectors
    by_hand = np.mean(np.linalg.norm(probe[:, :, None, :] - emb.transpose(1, 0, 2)[None], axis=1), axis=-1)
    np.testing.assert_allclose(d, by_hand, rtol=1e-5)
    with pytest.raises(Exception, match="shape"):
        back.add(rng.normal(size=(1, 5, 3)).astype(np.float32), [{"subject": "d", "content_hash": "hd"}])
