"""trainer=ddp with 2 CPU processes (gloo) equals one process over the same global batches."""

from __future__ import annotations

import pytest
import torch

from lstc_gait.engine.checkpoint import load_checkpoint
from lstc_gait.engine.runtime import seed_everything
from lstc_gait.train import launch

# CE loss: per-sample terms averaged, so the mean of the two ranks' local means is the global mean.
# BatchNorm statistics are made global by GlobalBatchNorm (trainer.sync_bn, the CPU SyncBatchNorm).
# AdamW eps 1e-6: parameters whose true gradient is 0 (the bias in front of the BNNeck BatchNorm) get
# rounding-noise gradients that eps=1e-8 would normalise into full-size, order-dependent updates.
COMMON = ["loss=ce", "sampler=pk", "sampler.p=4", "sampler.k=2", "trainer.max_steps=3", "trainer.log_every=1",
          "trainer.checkpoint_every=0", "trainer.ema.enabled=false", "trainer.sync_bn=true",
          "trainer.optimizer.lr=1e-3", "trainer.optimizer.eps=1e-6", "dataset.num_frames=6"]


def _initial_weights(cfg, num_classes: int) -> dict[str, torch.Tensor]:
    """The weights the run starts from (model init is the only torch RNG use before training)."""
    import hydra

    seed_everything(int(cfg.seed))
    kernels = tuple(tuple(k) for k in cfg.model.kernels)
    return hydra.utils.instantiate(cfg.model, num_classes=num_classes, kernels=kernels, _convert_="all").state_dict()


def test_two_processes_match_one_process(debug_cfg, tmp_path):
    cfg = debug_cfg(*COMMON)
    single = launch(cfg, tmp_path / "single")
    assert single is not None and single.step == 3
    out = launch(debug_cfg(*COMMON, "trainer.strategy=ddp", "trainer.devices=2"), tmp_path / "ddp")
    assert out is None  # spawned: rank 0 wrote the files
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 3 and a["sampler"] == b["sampler"]
    init = _initial_weights(cfg, a["num_classes"])
    checked = 0
    for key, value in a["model"].items():
        if not value.dtype.is_floating_point:
            continue
        moved = (value - init[key]).abs().max().item()
        diff = (b["model"][key] - value).abs().max().item()
        # float tolerance, relative to how far training moved the tensor (3 steps of lr <= 1e-3)
        assert diff <= 0.05 * moved + 2e-6, f"{key}: ddp vs single {diff:.2e}, moved {moved:.2e}"
        checked += moved > 1e-4
    assert checked > 10
    # evaluation all-gathered both ranks' embeddings into one protocol run on rank 0 (after 3 steps the
    # nearest neighbours are near-ties, so the numbers themselves are not compared)
    assert set(b["metrics"]) == set(a["metrics"])
    assert all(0.0 <= b["metrics"][k] <= 100.0 for k in ("NM/rank1", "BG/rank1", "CL/rank1"))
    assert (tmp_path / "ddp" / "tables" / "rank1.csv").is_file()


def test_global_batch_not_divisible_by_world_size_is_a_clear_error(debug_cfg, tmp_path):
    cfg = debug_cfg("sampler.p=3", "sampler.k=1", "trainer.strategy=ddp", "trainer.devices=2")
    with pytest.raises(ValueError, match="not divisible"):
        launch(cfg, tmp_path / "x")
