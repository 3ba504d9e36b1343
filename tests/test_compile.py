"""``torch.compile(model, fullgraph=True)`` for every model setting, in eval and in training, with the
C++ kernels and on the PyTorch formulation.

Each value of each setting (joint lstc/dynamic, pooling hard/soft/mean/max/set, stripes pooled by
mean or mean + max, each branch on and off, kernels on/off) is covered at least once, not the full product. ``backend="aot_eager"``
traces the whole graph (Dynamo + AOTAutograd, the part that breaks on graph breaks) without
inductor's minutes of C++ compilation. Also: a checkpoint of a compiled model has plain keys.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lstc_gait.models import build_gait_model
from lstc_gait.ops import build

CASES = [
    # (joint, pooling, branches, kernels)
    ("lstc", "hard", {}, True),
    ("dynamic", "soft", {"use_spatial": False}, True),
    ("lstc", "mean", {"use_temporal": False, "use_joint": False}, True),
    ("dynamic", "max", {"use_temporal": False, "use_spatial": False}, False),
    ("lstc", "soft", {"use_joint": False}, False),
    ("lstc", "set", {"spatial_pooling": "mean_max"}, True),  # GaitSet's set pooling, mean + max stripes
]


def _model(joint: str, pooling: str, branches: dict) -> nn.Module:
    torch.manual_seed(0)
    model = build_gait_model(num_classes=5, base_channels=8, num_stripes=4, embedding_dim=16, joint_type=joint,
                             pooling=pooling, **branches)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode folding is exercised
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("joint,pooling,branches,kernels", CASES)
def test_fullgraph_compile_train_and_eval(joint, pooling, branches, kernels, monkeypatch):
    if kernels and not build.load_library():
        pytest.skip("no C++ compiler: the kernels are not built")
    if not kernels:
        monkeypatch.setattr(build, "_state", {"ok": False})
    torch._dynamo.reset()
    eager = _model(joint, pooling, branches)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    x = torch.rand(2, 1, 3, 32, 12, generator=torch.Generator().manual_seed(1))

    # training step: same loss, gradients flow to every parameter, running statistics updated alike
    eager.train()
    compiled.train()
    weights = torch.linspace(-1, 1, 2 * 16).view(2, 16)
    for module in (eager, compiled):
        out = module(x)
        ((out["embedding"] * weights).sum() + out["logits"].square().mean()).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters(), strict=True):
        if not p.requires_grad:
            continue
        assert q.grad is not None and torch.isfinite(q.grad).all(), name
        if name.endswith("backbone.fc.bias"):  # BatchNorm1d follows fc: the true gradient is 0 (rounding noise)
            continue
        assert _relative_error(q.grad, p.grad) < 1e-3, name
    for (name, b), c in zip(eager.named_buffers(), compiled_model.buffers(), strict=True):
        torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-4, msg=name)

    # inference: the compiled model equals eager mode to 1e-4
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        ref, out = eager(x), compiled(x)
    for key in ("embedding", "parts", "logits"):
        assert _relative_error(out[key], ref[key]) < 1e-4, key


def test_checkpoint_of_a_compiled_model_has_plain_keys():
    from lstc_gait.engine.trainer import Trainer, TrainSettings

    model = _model("lstc", "hard", {})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(model, nn.Identity(), optimizer, scheduler, sampler=None, loader=None,
                      settings=TrainSettings(max_steps=1), device=torch.device("cpu"), autocast=lambda: None,
                      scaler=torch.amp.GradScaler("cpu", enabled=False), compile=True)
    assert isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.raw_model is model
    keys = list(trainer.state_dict()["model"])
    assert keys == list(model.state_dict()) and not any("_orig_mod" in k for k in keys)
    assert isinstance(trainer._eval_model(), torch._dynamo.eval_frame.OptimizedModule)
