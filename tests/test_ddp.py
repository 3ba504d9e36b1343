"""trainer=ddp with 2 CPU processes (gloo) equals one process over the same global batches."""

from __future__ import annotations

import pytest
import torch

from lstc_gait.engine.checkpoint import load_checkpoint
from lstc_gait.train import launch

# CE loss: per-sample terms averaged, so the mean of the two ranks' local means is the global mean.
# BatchNorm statistics are made global by GlobalBatchNorm (trainer.sync_bn, the CPU SyncBatchNorm).
COMMON = ["loss=ce", "sampler=pk", "sampler.p=4", "sampler.k=2", "trainer.max_steps=3", "trainer.log_every=1",
          "trainer.checkpoint_every=0", "trainer.ema.enabled=false", "trainer.sync_bn=true"]


def test_two_processes_match_one_process(debug_cfg, tmp_path):
    single = launch(debug_cfg(*COMMON), tmp_path / "single")
    assert single is not None and single.step == 3
    out = launch(debug_cfg(*COMMON, "trainer.strategy=ddp", "trainer.devices=2"), tmp_path / "ddp")
    assert out is None  # spawned: rank 0 wrote the files
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 3 and a["sampler"] == b["sampler"]
    moved = 0
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=2e-5, msg=key)
        moved += int(not key.endswith("num_batches_tracked"))
    assert moved > 10
    # evaluation all-gathered the embeddings of both ranks: same test metrics as one process
    for key in ("NM/rank1", "BG/rank1", "CL/rank1"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-6)
    assert (tmp_path / "ddp" / "tables" / "rank1.csv").is_file()


def test_global_batch_not_divisible_by_world_size_is_a_clear_error(debug_cfg, tmp_path):
    cfg = debug_cfg("sampler.p=3", "sampler.k=1", "trainer.strategy=ddp", "trainer.devices=2")
    with pytest.raises(ValueError, match="not divisible"):
        launch(cfg, tmp_path / "x")
