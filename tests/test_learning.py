"""Part heads, per-part losses, GaitSet, the wall-clock budget, schedules, augmentations, GEI baseline."""

from __future__ import annotations

import warnings

import hydra
import numpy as np
import pytest
import torch

from lstc_gait.data.augment import AugmentConfig, affine_jitter, apply_augment, erode3x3
from lstc_gait.engine.losses import BatchHardTripletLoss, GaitLoss
from lstc_gait.engine.optim import WarmupCosine
from lstc_gait.models import build_gait_model
from lstc_gait.models.heads import GaitModel, SeparateFCs, StripePyramid
from lstc_gait.train import JobInfo, run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_all_triplet_hand_computed():
    # 1-D embeddings 0, 1 (id 0) and 3, 7 (id 1), margin 0.5. The 8 (a, p, n) triplets:
    # a=0,p=1: d_ap 1 vs d_an 3, 7 -> 0, 0;  a=1,p=0: 1 vs 2, 6 -> 0, 0
    # a=3,p=7: 4 vs 3, 2 -> 1.5, 2.5;        a=7,p=3: 4 vs 7, 6 -> 0, 0
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert BatchHardTripletLoss(0.5, mining="batch_all")(x, y).item() == pytest.approx(4.0 / 2)  # non-zero mean
    assert BatchHardTripletLoss(0.5, mining="batch_all", nonzero_mean=False)(x, y).item() == pytest.approx(4.0 / 8)


def test_part_losses_are_the_mean_of_per_part_losses():
    torch.manual_seed(0)
    emb = torch.randn(8, 5, 3)  # (N, D, P)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for mining in ("batch_all", "batch_hard"):
        loss = BatchHardTripletLoss(0.3, mining=mining)
        per_part = [loss(emb[:, :, p], y) for p in range(3)]
        assert loss(emb, y).item() == pytest.approx(float(sum(per_part) / 3), rel=1e-5)
    logits = torch.randn(8, 4, 3)
    total, parts = GaitLoss(ce_weight=1.0, triplet_weight=0.0, label_smoothing=0.0)({"logits": logits,
                                                                                     "embedding": emb}, y)
    ce = [torch.nn.functional.cross_entropy(logits[:, :, p], y) for p in range(3)]
    assert total.item() == pytest.approx(float(sum(ce) / 3), rel=1e-5)


def test_part_head_shapes_pyramid_and_separate_fcs():
    pyr = StripePyramid(4, [4, 2, 1])
    parts = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    out = pyr(parts)
    assert out.shape == (2, 3, 7)
    # level 2, group 0 of sample 0 channel 0: stripes 0, 1 -> mean 0.5 + max 1
    assert out[0, 0, 4].item() == pytest.approx(1.5)
    assert out[0, 0, 6].item() == pytest.approx(1.5 + 3)  # level 1: mean 1.5 + max 3
    fcs = SeparateFCs(3, 4, 2)
    x = torch.randn(5, 4, 3)
    y = fcs(x)
    assert y.shape == (5, 2, 3)
    assert torch.allclose(y[:, :, 1], x[:, :, 1] @ fcs.weight[1], atol=1e-6)  # part 1 uses its own weights
    model = build_gait_model(7, head="parts", part_dim=16, pyramid=[8, 4, 2, 1], base_channels=8, num_stripes=8)
    o = model(torch.rand(4, 1, 6, 64, 44))
    assert o["embedding"].shape == (4, 16, 15) and o["logits"].shape == (4, 7, 15)
    assert model.backbone.fc is None  # no unused single-vector FC in a parts model


def test_stored_config_without_head_keys_builds_the_legacy_single_head():
    from lstc_gait.engine.checkpoint import model_from_stored_config

    legacy = {"_target_": "lstc_gait.models.build_gait_model", "in_channels": 1, "base_channels": 8,
              "num_stripes": 4, "embedding_dim": 32, "kernels": [[3, 7, 3], [3, 5, 3], [3, 3, 3]],
              "pooling": "hard", "topk": 2, "temperature": 1.0}
    model = model_from_stored_config(legacy, 5)
    assert isinstance(model, GaitModel) and model.head_type == "single" and model.part_head is None
    ref = GaitModel(__import__("lstc_gait.models", fromlist=["LSTCBackbone"]).LSTCBackbone(
        base_channels=8, num_stripes=4, embedding_dim=32), 5)
    assert set(model.state_dict()) == set(ref.state_dict())
    model.load_state_dict(ref.state_dict())
    model.eval()
    ref.eval()
    x = torch.rand(2, 1, 5, 64, 44)
    assert torch.equal(model(x)["embedding"], ref(x)["embedding"])
    assert model(x)["embedding"].shape == (2, 32)


def test_gaitset_trains_a_few_steps_and_evaluates_part_wise(debug_cfg, tmp_path):
    cfg = debug_cfg("model=gaitset", "model.part_dim=16", "loss=triplet", "dataset.sampling=random",
                    "trainer.max_steps=3", "trainer.checkpoint_every=0", "trainer.log_every=1")
    result = run(cfg, tmp_path / "run", JobInfo())
    assert result.step == 3 and all(np.isfinite(v) for _, v in result.losses)
    assert 0.0 <= result.metrics["NM/rank1"] <= 100.0 and "NM/same_view_rank1" in result.metrics


def test_cpu_preset_trains_on_cache_frames_at_its_model_input_size(debug_cfg, tmp_path):
    # experiment=casia_b_cpu as composed (width, model-input resize, set pooling, parts head), on the
    # cache's 64-row frames, through the real training and evaluation; only the budget is shrunk.
    cfg = debug_cfg("experiment=casia_b_cpu", "trainer.max_minutes=0", "trainer.max_steps=2",
                    "trainer.eval_every_minutes=0", "trainer.checkpoint_every=0", "sampler.p=2", "sampler.k=2")
    h, w = cfg.model.input_size
    assert (h, w) != (64, 44) and cfg.dataset.sampling == "ordered"
    result = run(cfg, tmp_path / "run", JobInfo())
    assert result.step == 2 and all(np.isfinite(v) for _, v in result.losses)
    assert 0.0 <= result.metrics["NM/rank1"] <= 100.0
    model = hydra.utils.instantiate(cfg.model, num_classes=4, _convert_="all").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 5, 64, 44))
    assert out["embedding"].shape == (2, cfg.model.part_dim, cfg.model.num_stripes)


def test_max_minutes_stops_and_caps(debug_cfg, tmp_path):
    # A budget far below one step's time: the trainer stops after the first step and evaluates.
    cfg = debug_cfg("trainer.max_steps=0", "trainer.max_minutes=0.0000001", "trainer.checkpoint_every=0")
    result = run(cfg, tmp_path / "a", JobInfo())
    assert result.step == 1 and "NM/rank1" in result.metrics
    # A generous budget with max_steps: max_steps caps the plan.
    cfg = debug_cfg("trainer.max_steps=4", "trainer.max_minutes=60", "trainer.checkpoint_every=0",
                    "trainer.log_every=2")
    result = run(cfg, tmp_path / "b", JobInfo())
    assert result.step == 4 and result.planned_steps == 4


def test_schedule_step_decay_and_replan():
    sched = WarmupCosine(100, 10, 0.1, decay="step", step_at=(0.5, 0.8), step_factor=0.1)
    assert sched(0) == pytest.approx(0.1)
    assert sched(10) == pytest.approx(1.0) and sched(49) == pytest.approx(1.0)
    assert sched(50) == pytest.approx(0.1) and sched(80) == pytest.approx(0.01)
    sched.total_steps = 200  # re-planned (trainer.max_minutes)
    assert sched(80) == pytest.approx(1.0)
    assert WarmupCosine(10, 0, decay="none")(9) == 1.0


def test_augmentations_flip_warns_erode_affine():
    with pytest.warns(UserWarning, match="change of view"):
        AugmentConfig(flip_prob=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = AugmentConfig(erode_prob=1.0, affine_prob=1.0, erase_prob=0.5)
    frames = np.zeros((3, 64, 44), np.uint8)
    frames[:, 20:40, 10:30] = 255
    eroded = erode3x3(frames)
    assert eroded[:, 21:39, 11:29].all() and not eroded[:, 20, 15].any()
    shifted = affine_jitter(frames, 2.0, -3.0, 1.0)
    assert np.array_equal(shifted[:, 22:42, 7:27], frames[:, 20:40, 10:30])
    a = apply_augment(frames, cfg, np.random.default_rng(3))
    b = apply_augment(frames, cfg, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.shape == frames.shape and a.dtype == np.uint8


def test_gei_baseline_on_the_test_rows(tiny_data_dir):
    from lstc_gait.data import open_cache
    from lstc_gait.evaluation.baselines import gait_energy_images, gei_baseline, rank1_ratio_row

    cache_dir = next(p for p in tiny_data_dir.glob("synthgait-*/cache") if p.is_dir())
    cache = open_cache(cache_dir)
    rows = np.arange(len(cache))
    gei = gait_energy_images(cache, rows[:2])
    assert gei.shape == (2, 64 * 44) and 0.0 <= gei.min() and gei.max() <= 1.0
    _, metrics = gei_baseline(cache, rows)
    assert 0.0 <= metrics["NM/rank1"] <= 100.0 and metrics["NM/same_view_rank1"] >= metrics["NM/rank1"] - 1e-9
    table = rank1_ratio_row({"NM/rank1": 60.0, "BG/rank1": 40.0, "CL/rank1": 20.0},
                            {"NM/rank1": 30.0, "BG/rank1": 20.0, "CL/rank1": 20.0})
    assert table.loc["ratio", "NM"] == pytest.approx(2.0) and table.loc["ratio", "mean"] == pytest.approx(40.0 / (70.0 / 3))


def test_time_to_accuracy_trains_gaitset_on_its_own_sampling_and_resolution(tmp_path):
    import importlib.util
    from pathlib import Path

    from conftest import compose

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("time_to_accuracy", path)
    tta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tta)
    runs = dict(tta.curve_presets(["experiment=casia_b_cpu"], tmp_path, gaitset=True, mlflow=False))
    lstc, gaitset = compose(runs["lstc"]), compose(runs["gaitset"])
    assert list(lstc.model.input_size) == [32, 22] and lstc.dataset.sampling == "ordered"
    assert gaitset.model.variant == "gaitset" and gaitset.model.input_size is None
    assert gaitset.dataset.sampling == "random" and gaitset.tracking._target_ == lstc.tracking._target_
    # a resolution the user asks for applies to both
    runs = dict(tta.curve_presets(["experiment=casia_b_cpu", "model.input_size=[48,33]"], tmp_path, gaitset=True))
    assert list(compose(runs["gaitset"]).model.input_size) == [48, 33]
