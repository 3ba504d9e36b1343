"""Settings that would silently do nothing are refused at start, protocols are checked before the first
step, one-camera retrieval gives numbers: each a one-line user error naming the key or the set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lstc_gait.errors import UserError
from lstc_gait.evaluation.protocols import ProtocolError
from lstc_gait.pipelines.train import RunConfigError, launch, run, stripe_rows_problem, validate_run_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("overrides, message", [
    (["sampler.k=1"], r"^sampler\.k=1: the triplet loss"),
    (["loss=triplet", "sampler.k=1"], r"^sampler\.k=1: the triplet loss"),
    (["loss=triplet", "sampler=random"], r"^sampler=RandomSampler: the triplet loss .*sampler=pk"),
    (["loss=ce_triplet", "sampler=random"], r"^sampler=RandomSampler"),
    (["model.num_stripes=100"], r"^model\.num_stripes=100 is more than the 16 feature rows"),
    (["model=dynamic", "model.num_stripes=17"], r"^model\.num_stripes=17 .* 16 feature rows .*<=16"),
    (["pooling.topk=0"], r"^pooling\.topk=0: hard temporal pooling"),
    (["pooling.topk=7"], r"^pooling\.topk=7 is larger than the training clip \(dataset\.num_frames=6\)"),
    (["trainer.strategy=ddp", "trainer.devices=3"], r"sampler\.p x sampler\.k = 4 x 2 = 8 is not divisible by the 3"),
    (["eval.exclude_same_view=sometimes"], r"^eval\.exclude_same_view='sometimes'"),
], ids=["k1", "triplet-k1", "triplet-random", "ce_triplet-random", "stripes", "stripes-dynamic", "topk0",
        "topk-clip", "ddp", "same-view"])
def test_settings_that_would_do_nothing_are_refused_before_any_work(debug_cfg, tmp_path, overrides, message):
    empty = tmp_path / "no_data_yet"
    cfg = debug_cfg(*overrides, f"paths.data_dir={empty}")
    with pytest.raises(RunConfigError, match=message) as err:
        launch(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not empty.exists() and not (tmp_path / "run").exists()  # no data, model or tracking work


def test_the_same_settings_within_limits_pass(debug_cfg):
    for overrides in (["sampler.k=2"], ["loss=ce", "sampler=random", "sampler.k=1"], ["model.num_stripes=16"],
                      ["pooling.topk=6"], ["pooling=mean", "pooling.topk=0"], ["trainer.strategy=ddp", "trainer.devices=4"],
                      ["eval.exclude_same_view=false"], ["loss=triplet", "sampler=multiview_pk"]):
        validate_run_config(debug_cfg(*overrides))


def test_stripe_check_asks_the_model_variant(debug_cfg, monkeypatch):
    """A new variant registers how many feature rows it cuts; the one check then covers it."""
    from lstc_gait.models import registry

    monkeypatch.setitem(registry._VARIANTS, "coarse", registry._VARIANTS["lstc"])
    monkeypatch.setitem(registry._FEATURE_ROWS, "coarse", lambda height, kwargs: height // 16)
    cfg = debug_cfg("model.variant=coarse", "model.num_stripes=5")
    assert "model.num_stripes=5 is more than the 4 feature rows that the coarse model" in stripe_rows_problem(cfg)
    assert stripe_rows_problem(debug_cfg("model.variant=coarse", "model.num_stripes=4")) is None
    monkeypatch.setitem(registry._VARIANTS, "stripeless", registry._VARIANTS["lstc"])
    assert stripe_rows_problem(debug_cfg("model.variant=stripeless", "model.num_stripes=100")) is None
    assert stripe_rows_problem(debug_cfg("model.num_stripes=8"), input_height=16) is not None


def test_checks_that_need_the_data_run_before_the_first_step(debug_cfg, tmp_path):
    steps = []
    with pytest.raises(RunConfigError, match=r"^sampler\.p=5 subjects per batch, but the training split .* only 4"):
        run(debug_cfg("sampler.p=5"), tmp_path / "p", step_hook=steps.append)
    # the synthetic data has CASIA-B types, not OU-MVLP sequence ids: both missing sets are named
    with pytest.raises(ProtocolError, match=r"OU-MVLP protocol: the evaluated data has no probe set \(seq 00\) and "
                                            r"no gallery \(seq 01\)"):
        run(debug_cfg("dataset.evaluation=ou_mvlp"), tmp_path / "ou", step_hook=steps.append)
    # a random sampler has no identity structure: p is a batch size there, not a number of subjects
    validate_run_config(debug_cfg("sampler=random", "loss=ce", "sampler.p=5"))
    assert steps == []


def test_an_empty_split_is_a_user_error(debug_cfg, tmp_path):
    partition = tmp_path / "partition.json"
    partition.write_text('{"TRAIN_SET": ["nobody"], "TEST_SET": ["075"]}')
    with pytest.raises(UserError) as err:
        run(debug_cfg("dataset.split=partition", f"dataset.partition_file={partition}"), tmp_path / "run")
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------- one camera, end to end (bugcase 16)
def _one_camera_flat_root(root: Path, subjects: int = 4, walks: int = 3, frames: int = 10) -> Path:
    """The documented flat layout with one root and ordinary folder names: one camera, one view."""
    from mask_walk import walk_frame
    from PIL import Image

    for s in range(subjects):
        for w in range(walks):
            folder = root / f"{s + 1:03d}" / f"walk{w + 1}"
            folder.mkdir(parents=True)
            for t in range(frames):
                img = walk_frame(t + 2 * w + 3 * s, h=120, w=96 + 8 * s)
                Image.fromarray(img).save(folder / f"{t + 1:03d}.png")
    return root


def test_one_camera_retrieval_evaluates_to_numbers(tmp_path):
    from lstc_gait.pipelines.evaluate import evaluate
    from tests.test_commands import compose as compose_command

    root = _one_camera_flat_root(tmp_path / "raw")
    ckpt = ROOT / "tests" / "fixtures" / "checkpoint_v1" / "platform_v1.pt"
    base = [f"checkpoint={ckpt}", "dataset=flat", f"dataset.root={root}", f"dataset.cache_dir={tmp_path / 'cache'}",
            "dataset.workers=1", "split=all", "progress=false", f"paths.output_dir={tmp_path / 'out'}"]
    out = evaluate(compose_command("evaluate", [*base, f"out_dir={tmp_path / 'ev'}"]), tmp_path)
    assert out["protocol"] == "retrieval"
    metrics = out["metrics"]
    assert metrics["num_skipped"] == 0 and all(np.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["rank1"] <= 100.0 and metrics["mAP"] > 0
    header = (tmp_path / "ev" / "retrieval.md").read_text()
    assert "same_view_positives: kept (exclude_same_view=auto, 1 view)" in header
    with pytest.raises(ProtocolError, match="none of the 12 queries .*exclude_same_view"):
        evaluate(compose_command("evaluate", [*base, "exclude_same_view=true"]), tmp_path)
