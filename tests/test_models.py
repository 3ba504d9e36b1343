"""Model family: stripe locality, dynamic fast form, BN folding, padding masking, switches, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lstc_gait.models import (
    LSTC,
    AsymmetricBlock,
    BNNeckHead,
    DynamicConv3d,
    GaitModel,
    LSTCBackbone,
    build_gait_model,
)
from lstc_gait.models.blocks import compute_branch_width
from lstc_gait.models.lstc import stripe_depthwise_conv3d
from lstc_gait.models.stripes import stripe_bounds

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.bias.shape, generator=g) * 0.3)


@pytest.mark.parametrize("h,s", [(13, 4), (12, 4), (9, 1), (10, 10)])
def test_stripe_locality_exact_zero_gradient(h, s):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, h, 5, requires_grad=True)
    w = torch.randn(3, 1, 3, 7, 3)
    y = stripe_depthwise_conv3d(x, w, s)
    assert y.shape == x.shape
    for a, b in stripe_bounds(h, s):
        (grad,) = torch.autograd.grad(y[:, :, :, a:b].sum(), x, retain_graph=True)
        outside = torch.cat([grad[:, :, :, :a], grad[:, :, :, b:]], dim=3)
        assert torch.count_nonzero(outside) == 0
        assert torch.count_nonzero(grad[:, :, :, a:b]) > 0
    # value check against a plain loop over stripes
    ref = torch.cat([F.conv3d(x[:, :, :, a:b], w, padding=(1, 3, 1), groups=3) for a, b in stripe_bounds(h, s)], 3)
    assert torch.allclose(y, ref, atol=1e-5)


def test_lstc_module_and_errors():
    m = LSTC(4, 6, (3, 5, 3), num_stripes=3)
    assert set(m.state_dict()) >= {"depthwise.weight", "pointwise.weight", "bn.running_var"}
    assert m(torch.randn(2, 4, 3, 7, 5)).shape == (2, 6, 3, 7, 5)
    with pytest.raises(ValueError, match="num_stripes=3"):
        m(torch.randn(2, 4, 3, 2, 5))
    with pytest.raises(ValueError, match="odd"):
        LSTC(4, 6, (3, 4, 3))


def test_eval_bn_folding_equals_unfused():
    torch.manual_seed(0)
    block = AsymmetricBlock(6, 12, (3, 5, 3), num_stripes=2)
    _randomize_bn(block)
    block.eval()
    x = torch.randn(2, 6, 4, 8, 5)
    with torch.no_grad():
        fused = block(x)
        outs = []
        for seq in (block.branch_temporal, block.branch_spatial):
            outs.append(F.relu(seq[1](seq[0](x))))  # module calls: conv, then BN with running stats
        j = block.branch_joint
        outs.append(F.relu(j.bn(j.pointwise(j.stripe_depthwise(x)))))
        ref = F.relu(block.fuse[1](block.fuse[0](torch.cat(outs, 1))))
    assert torch.allclose(fused, ref, atol=1e-5)
    # the embedding BN1d folded into the Linear
    net = LSTCBackbone(base_channels=4, num_stripes=2, embedding_dim=8)
    _randomize_bn(net, 1)
    net.eval()
    flat = torch.randn(3, 16 * 2)
    with torch.no_grad():
        assert torch.allclose(net._embed(flat), net.bn(net.fc(flat)), atol=1e-5)


def test_dynamic_fast_form_equals_per_sample_kernel():
    torch.manual_seed(0)
    dyn = DynamicConv3d(5, 4, (3, 3, 3), num_experts=3, gate_hidden=7, temperature=0.5)
    assert dyn.weight.shape == (3, 4, 5, 3, 3, 3) and dyn.gate[0].out_channels == 7
    assert DynamicConv3d(40, 4).gate_hidden == 20 and DynamicConv3d(8, 4).gate_hidden == 16
    x = torch.randn(3, 5, 4, 6, 5)
    y = dyn(x)
    for n in range(3):
        pooled = x[n].mean(dim=(1, 2, 3)).view(1, 5, 1, 1, 1)
        logits = dyn.gate(pooled).flatten()
        g = torch.softmax(logits / 0.5, dim=0)
        kernel = (g.view(3, 1, 1, 1, 1, 1) * dyn.weight).sum(0)
        assert torch.allclose(y[n:n + 1], F.conv3d(x[n:n + 1], kernel, padding=1), atol=1e-5)
    y.sum().backward()
    assert dyn.weight.grad is not None and dyn.gate[0].weight.grad is not None


def test_dynamic_gate_masks_padded_frames():
    torch.manual_seed(0)
    dyn = DynamicConv3d(4, 3, (1, 3, 3))
    x = torch.randn(1, 4, 5, 6, 4)
    mask = torch.tensor([1.0, 1, 1, 0, 0]).view(1, 1, 5, 1, 1)
    g_masked = dyn.gate_weights(x * mask, mask)
    assert torch.allclose(g_masked, dyn.gate_weights(x[:, :, :3]), atol=1e-6)


def test_branch_width_rules_and_empty_subset():
    assert compute_branch_width(16, 3) == 8 and compute_branch_width(64, 3) == 10
    assert compute_branch_width(64, 1) == 32 and compute_branch_width(64, 2, "full") == 32
    assert compute_branch_width(64, 3, 12) == 12
    with pytest.raises(ValueError, match="branch_width"):
        compute_branch_width(64, 3, "wide")
    with pytest.raises(ValueError, match="use_temporal, use_spatial and use_joint"):
        AsymmetricBlock(4, 4, use_temporal=False, use_spatial=False, use_joint=False)
    with pytest.raises(ValueError, match="joint_type"):
        AsymmetricBlock(4, 4, joint_type="attention")
    blk = AsymmetricBlock(8, 16, branch_width="full", use_spatial=False)
    assert blk.fuse[0].in_channels == 2 * 8 and blk.branch_spatial is None


SUBSETS = [(t, s, j) for t in (False, True) for s in (False, True) for j in (False, True) if t or s or j]


SWITCHES = [(t, s, j, "lstc") for t, s, j in SUBSETS] + [(t, s, j, "dynamic") for t, s, j in SUBSETS if j]


@pytest.mark.parametrize("t,s,j,joint_type", SWITCHES)
def test_shapes_every_switch(t, s, j, joint_type):
    net = LSTCBackbone(base_channels=4, num_stripes=3, embedding_dim=10, use_temporal=t, use_spatial=s,
                       use_joint=j, joint_type=joint_type, pooling="soft")
    out = net(torch.rand(2, 1, 3, 16, 8))
    assert out["embedding"].shape == (2, 10) and out["parts"].shape == (2, 16, 3)
    keys = net.state_dict().keys()
    assert any("branch_temporal" in k for k in keys) == t and any("branch_spatial" in k for k in keys) == s
    assert any("branch_joint" in k for k in keys) == j


@pytest.mark.parametrize("pooling", ["hard", "soft", "mean", "max"])
@pytest.mark.parametrize("joint_type", ["lstc", "dynamic"])
def test_padded_batch_equals_each_sequence_alone(pooling, joint_type):
    torch.manual_seed(0)
    net = LSTCBackbone(base_channels=4, num_stripes=3, embedding_dim=12, joint_type=joint_type,
                       pooling=pooling, topk=3, temperature=0.5)
    _randomize_bn(net)  # non-zero BN shifts make padded frames non-zero after every block
    net.eval()
    lengths = torch.tensor([6, 4, 2])
    x = torch.rand(3, 1, 6, 16, 8)
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = 0.0  # collate pads with zeros at the end of time
    with torch.no_grad():
        batch = net(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = net(x[i:i + 1, :, :n])
            assert torch.allclose(batch["embedding"][i:i + 1], alone["embedding"], atol=1e-5), i
            assert torch.allclose(batch["parts"][i:i + 1], alone["parts"], atol=1e-5)
        unmasked = net(x)["embedding"]
    assert not torch.allclose(unmasked[2], batch["embedding"][2], atol=1e-4)  # masking matters


def test_bad_inputs_give_clear_errors():
    net = LSTCBackbone(base_channels=4, num_stripes=4, embedding_dim=8)
    with pytest.raises(ValueError, match=r"\(N, 1, T, H, W\)"):
        net(torch.rand(2, 3, 16, 8))
    with pytest.raises(ValueError, match="input channel"):
        net(torch.rand(2, 2, 3, 16, 8))
    with pytest.raises(ValueError, match="num_stripes=4"):
        net(torch.rand(2, 1, 3, 12, 8))
    with pytest.raises(ValueError, match="float"):
        net(torch.zeros(2, 1, 3, 16, 8, dtype=torch.uint8))
    x = torch.rand(2, 1, 3, 16, 8)
    with pytest.raises(ValueError, match="lengths must have shape"):
        net(x, torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match=r"\[1, T=3\]"):
        net(x, torch.tensor([4, 2]))
    with pytest.raises(ValueError, match=r"\[1, T=3\]"):
        net(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="integer"):
        net(x, torch.tensor([3.0, 2.0]))
    with pytest.raises(ValueError, match="pooling"):
        LSTCBackbone(pooling="avg")
    with pytest.raises(ValueError, match="kernels"):
        LSTCBackbone(kernels=[[3, 3, 3]])


def test_gait_model_head_and_builder():
    model = build_gait_model(num_classes=7, base_channels=4, num_stripes=2, embedding_dim=8,
                             kernels=[[3, 5, 3], [3, 3, 3], [1, 3, 3]])
    assert isinstance(model, GaitModel) and isinstance(model.head, BNNeckHead)
    assert model.backbone.block3.kernel_size == (1, 3, 3)
    x = torch.rand(4, 1, 3, 16, 8)
    out = model(x)
    assert out["logits"].shape == (4, 7) and out["embedding"].shape == (4, 8)
    assert model.head.classifier.bias is None and not model.head.bn.bias.requires_grad
    out["logits"].logsumexp(1).sum().backward()
    assert model.backbone.stem[0].weight.grad is not None
    assert "logits" not in build_gait_model(0, base_channels=4, num_stripes=2, embedding_dim=8)(x)
    with pytest.raises(ValueError):
        GaitModel(LSTCBackbone(base_channels=4, num_stripes=2), -1)


def test_train_mode_uses_batch_stats_and_eval_is_deterministic():
    torch.manual_seed(0)
    net = LSTCBackbone(base_channels=4, num_stripes=2, embedding_dim=8)
    x = torch.rand(3, 1, 3, 16, 8)
    net.train()
    net(x)
    assert int(net.stem[1].num_batches_tracked) == 1  # training path runs the real BN
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x)["embedding"], net(x)["embedding"])
    assert int(net.stem[1].num_batches_tracked) == 1


def test_constructor_defaults_are_the_typed_schemas():
    """The schema is the one place model defaults live: the constructors read theirs from it."""
    import inspect

    from lstc_gait.config_schema import ModelConfig, model_default
    from lstc_gait.models.gaitset import GaitSet, build_gaitset

    assert model_default("base_channels") == ModelConfig.base_channels == 8
    assert model_default("pooling") == "hard" and model_default("joint_type") == "lstc"
    for fn in (LSTCBackbone, GaitModel, build_gait_model, GaitSet, build_gaitset):
        params = inspect.signature(fn).parameters
        shared = [k for k in params if k in ModelConfig.__dataclass_fields__]
        assert shared, fn
        for name in shared:
            if (fn, name) in ((GaitModel, "head"), (build_gait_model, "head")):
                assert params[name].default == "single"  # the legacy head of configs without one
                continue
            assert params[name].default == model_default(name), (fn.__name__, name)
    net = LSTCBackbone()
    assert net.config["base_channels"] == 8 and net.config["kernels"] == ((3, 7, 3), (3, 5, 3), (3, 3, 3))
    with pytest.raises(TypeError):
        LSTCBackbone(1, 8)  # keyword-only: no positional call can silently shift a size
