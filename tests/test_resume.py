"""Resume: a run stopped mid-way and resumed equals an uninterrupted run; a foreign checkpoint is refused."""

from __future__ import annotations

import pytest
import torch

from lstc_gait.engine.checkpoint import CheckpointError, read_checkpoint
from lstc_gait.engine.optim import WarmupCosine
from lstc_gait.tracking import NullTracker
from lstc_gait.train import run

STEPS = ["trainer.max_steps=6", "trainer.log_every=1", "trainer.checkpoint_every=2", "trainer.eval_every=0",
         "trainer.deterministic=true"]


class Stop(Exception):
    pass


def test_killed_run_resumes_as_if_it_never_stopped(debug_cfg, tmp_path):
    full = run(debug_cfg(*STEPS), tmp_path / "full")

    def kill_after_5(step: int) -> None:
        if step == 5:  # after the step-4 checkpoint: step 5 is lost, as in a real kill
            raise Stop

    with pytest.raises(Stop):
        run(debug_cfg(*STEPS), tmp_path / "split", step_hook=kill_after_5)
    assert read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt").state["step"] == 4
    resumed = run(debug_cfg(*STEPS, "resume=auto"), tmp_path / "split")

    assert [s for s, _ in resumed.losses] == [5, 6]
    full_losses = dict(full.losses)
    for step, loss in resumed.losses:  # the same batches and the same losses
        assert loss == pytest.approx(full_losses[step], rel=1e-6, abs=1e-7)
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt").state
    b = read_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt").state
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    for key in a["ema"]["module"]:
        torch.testing.assert_close(a["ema"]["module"][key], b["ema"]["module"][key], rtol=1e-5, atol=1e-6)
    assert a["sampler"] == b["sampler"] and a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert resumed.metrics == pytest.approx(full.metrics, abs=1e-6)


def test_resume_auto_without_checkpoint_starts_fresh_and_paths_must_exist(debug_cfg, tmp_path):
    result = run(debug_cfg("trainer.max_steps=1", "resume=auto"), tmp_path / "fresh")
    assert result.step == 1
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        run(debug_cfg("resume=/nonexistent/last.pt"), tmp_path / "x")


def test_checkpoint_of_another_model_config_is_refused_naming_the_mismatch(debug_cfg, tmp_path):
    run(debug_cfg("trainer.max_steps=1"), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError) as e:
        run(debug_cfg("trainer.max_steps=2", "model=dynamic", "model.base_channels=16", f"resume={ckpt}"),
            tmp_path / "b")
    text = str(e.value)
    assert "model.joint_type" in text and "'lstc'" in text and "'dynamic'" in text
    assert "model.base_channels" in text


class Recorder(NullTracker):
    """A tracker (``tracking._target_``) keeping what a run logs, for the test below."""

    logged: list = []

    def log_metrics(self, metrics, step=None):  # noqa: D102
        Recorder.logged.append(("metrics", step, dict(metrics)))

    def set_tags(self, tags):  # noqa: D102
        Recorder.logged.append(("tags", None, dict(tags)))

    def log_params(self, params):  # noqa: D102
        Recorder.logged.append(("params", None, params))


def test_resume_with_changed_settings_replans_the_schedule_and_records_the_change(debug_cfg, tmp_path, caplog):
    base = ["trainer.log_every=1", "trainer.checkpoint_every=0", "trainer.eval_every=0",
            "trainer.scheduler.decay=cosine", "trainer.scheduler.warmup_steps=2",
            "tracking._target_=tests.test_resume.Recorder"]
    import importlib

    logged = importlib.import_module("tests.test_resume").Recorder.logged  # the class Hydra instantiates
    run(debug_cfg(*base, "trainer.max_steps=8"), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    logged.clear()
    with caplog.at_level("WARNING"):
        run(debug_cfg(*base, "trainer.max_steps=12", f"resume={ckpt}"), tmp_path / "b")
    assert "trainer.max_steps: 8 -> 12" in caplog.text
    assert [t for kind, _, t in logged if kind == "tags"] == [{"resume.changed": "trainer.max_steps: 8 -> 12"}]
    lr = {step: m["train/lr"] for kind, step, m in logged if kind == "metrics" and "train/lr" in m}
    assert sorted(lr) == [9, 10, 11, 12]
    cfg = debug_cfg(*base)
    sched, base_lr = cfg.trainer.scheduler, float(cfg.trainer.optimizer.lr)
    plan = WarmupCosine(12, **{k: v for k, v in sched.items() if not k.startswith("_")})
    minimum = base_lr * sched.min_lr_ratio
    for step in (9, 10, 11, 12):  # the lr after each step follows the 12-step plan (the lr of the next step)
        assert lr[step] == pytest.approx(base_lr * plan(step), rel=1e-6)
    assert all(lr[s] > 1.5 * minimum for s in (9, 10, 11)) and lr[12] == pytest.approx(minimum)
    state = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt").state
    assert state["scheduler"]["last_epoch"] == 12 and state["config"]["trainer"]["max_steps"] == 12
    # changes that cannot continue are refused in one line naming the keys, before any data work
    for over, key in ((["model.base_channels=16"], "model.base_channels: 8 -> 16"),
                      (["trainer.shrink_synthetic.num_subjects=8"], "trainer.shrink_synthetic.num_subjects: 6 -> 8")):
        with pytest.raises(CheckpointError, match=key) as err:
            run(debug_cfg(*base, *over, "trainer.max_steps=12", f"resume={ckpt}"), tmp_path / "c")
        assert "\n" not in str(err.value)
