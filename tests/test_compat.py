"""Checkpoint importer: fixture parity, parity with an independent re-implementation of the original
math on random weights for many configurations, and clear errors on malformed files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lstc_gait.compat import (
    CheckpointFormatError,
    load_reference_checkpoint,
    load_reference_weights,
    reference_args_to_kwargs,
)
from lstc_gait.models import LSTCBackbone, build_gait_model

FIXTURES = Path(__file__).parent / "fixtures"
CKPT = FIXTURES / "lstc_b16_hard_s8.pt"
CASE = FIXTURES / "lstc_b16_hard_s8.case.pt"


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# A deliberately plain re-implementation of the original math (README of the seed checkpoints):
# python loops over stripes, a per-sample loop for the dynamic kernel, BatchNorm written out.
# --------------------------------------------------------------------------------------------------
def _bn(sd, prefix, x):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = sd[prefix + ".running_mean"].view(shape), sd[prefix + ".running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[prefix + ".weight"].view(shape) + sd[prefix + ".bias"].view(shape)


def _stripes(h, s):
    step = max(1, h // s)
    out = []
    for i in range(s):
        start = i * step
        stop = h if i == s - 1 else (i + 1) * step
        out.append((start, stop))
    return out


def _ref_block(sd, p, x, cin, cout, k, a):
    flags = [a["use_temporal"], a["use_spatial"], a["use_joint"]]
    n = sum(flags)
    m = max(cout // (2 * n), 8)
    kt, kh, kw = k
    outs = []
    if a["use_temporal"]:
        y = F.conv3d(x, sd[p + ".branch_temporal.0.weight"], padding=(kt // 2, 0, 0))
        outs.append(torch.relu(_bn(sd, p + ".branch_temporal.1", y)))
    if a["use_spatial"]:
        y = F.conv3d(x, sd[p + ".branch_spatial.0.weight"], padding=(0, kh // 2, kw // 2))
        outs.append(torch.relu(_bn(sd, p + ".branch_spatial.1", y)))
    if a["use_joint"]:
        j = p + ".branch_joint"
        if a["joint_type"] == "lstc":
            pieces = []
            for start, stop in _stripes(x.shape[3], a["num_stripes"]):
                pieces.append(F.conv3d(x[:, :, :, start:stop], sd[j + ".depthwise.weight"],
                                       padding=(kt // 2, kh // 2, kw // 2), groups=cin))
            y = F.conv3d(torch.cat(pieces, dim=3), sd[j + ".pointwise.weight"])
            outs.append(torch.relu(_bn(sd, j + ".bn", y)))
        else:
            experts = sd[j + ".weight"]
            assert experts.shape[1] == m
            per_sample = []
            for i in range(x.shape[0]):
                pooled = x[i].mean(dim=(1, 2, 3))  # (cin,)
                w0 = sd[j + ".gate.0.weight"].reshape(-1, cin)
                hidden = torch.relu(w0 @ pooled + sd[j + ".gate.0.bias"])
                w2 = sd[j + ".gate.2.weight"].reshape(experts.shape[0], -1)
                gate = torch.softmax(w2 @ hidden + sd[j + ".gate.2.bias"], dim=0)
                kernel = sum(gate[e] * experts[e] for e in range(experts.shape[0]))
                per_sample.append(F.conv3d(x[i:i + 1], kernel, padding=(kt // 2, kh // 2, kw // 2)))
            outs.append(torch.cat(per_sample, dim=0))
    y = F.conv3d(torch.cat(outs, dim=1), sd[p + ".fuse.0.weight"])
    return torch.relu(_bn(sd, p + ".fuse.1", y))


def reference_forward(sd, a, x):
    b = a["base_channels"]
    c1, c2, c3 = b, 2 * b, 4 * b
    y = torch.relu(_bn(sd, "stem.1", F.conv3d(x, sd["stem.0.weight"], padding=1)))
    y = _ref_block(sd, "block1", y, c1, c1, (3, 7, 3), a)
    y = F.max_pool3d(y, (1, 2, 2))
    y = _ref_block(sd, "block2", y, c1, c2, (3, 5, 3), a)
    y = F.max_pool3d(y, (1, 2, 2))
    y = _ref_block(sd, "block3", y, c2, c3, (3, 3, 3), a)
    y = torch.relu(_bn(sd, "head.1", F.conv3d(y, sd["head.0.weight"])))
    feats = []
    for start, stop in _stripes(y.shape[3], a["num_stripes"]):
        f = y[:, :, :, start:stop].mean(dim=(3, 4))  # (N, C, T)
        score = torch.sqrt(torch.clamp((f**2).sum(dim=1), min=1e-6))  # (N, T)
        rows = []
        for i in range(f.shape[0]):
            if a["pooling_soft"]:
                w = torch.softmax(score[i] / max(1e-6, a["pooling_temperature"]), dim=0)
                rows.append((f[i] * w).sum(dim=1))
            else:
                idx = torch.topk(score[i], min(a["pooling_topk"], f.shape[2])).indices
                rows.append(f[i][:, idx].mean(dim=1))
        feats.append(torch.stack(rows))
    flat = torch.cat(feats, dim=1)
    return _bn(sd, "bn", F.linear(flat, sd["fc.weight"], sd["fc.bias"]))


def make_args(**over):
    args = dict(height=44, width=12, seq_len=6, base_channels=8, num_stripes=8, embedding_dim=24,
                pooling_topk=2, pooling_soft=False, pooling_temperature=1.0, use_temporal=True,
                use_spatial=True, use_joint=True, joint_type="lstc", dynamic_experts=4,
                dynamic_gate_hidden=0, lr=3e-4, seed=0)
    args.update(over)
    return args


def random_state(args, seed):
    """Random weights *and* BN statistics, so any mismatch in the math shows."""
    g = torch.Generator().manual_seed(seed)
    sd = LSTCBackbone(**reference_args_to_kwargs(args)).state_dict()
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) * 1.5 + 0.5
        elif k.endswith("running_mean"):
            out[k] = torch.randn(v.shape, generator=g) * 0.2
        elif v.dim() >= 2:
            fan_in = math.prod(v.shape[1:]) if "branch_joint.weight" not in k else math.prod(v.shape[2:])
            out[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif k.endswith(".weight") and "gate" not in k:
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.2
    return out


def save_original(path, sd, args):
    torch.save({"model": sd, "classifier": {"weight": torch.zeros(3, args["embedding_dim"]),
                                            "bias": torch.zeros(3)},
                "epoch": 3, "val_acc": 0.5, "num_classes": 3, "args": args}, path)


def silhouettes(n, t, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, t, h, w, generator=g) > 0.5).float()


def assert_parity(got, want):
    err = (got - want).abs().max().item()
    assert err <= 1e-4 * want.abs().max().item(), f"max abs error {err} vs scale {want.abs().max().item()}"


# --------------------------------------------------------------------------------------------------
def test_fixture_parity():
    model = load_reference_checkpoint(CKPT)
    assert not model.training
    case = torch.load(CASE, weights_only=False)
    x = case["silhouettes"][:, None].float() / 255
    with torch.no_grad():
        got = model(x)["embedding"]
    assert got.shape == case["embedding"].shape
    assert_parity(got, case["embedding"])


def test_independent_reference_matches_fixture():
    """The plain re-implementation below is itself checked against the original's output."""
    ckpt = torch.load(CKPT, weights_only=False)
    case = torch.load(CASE, weights_only=False)
    x = case["silhouettes"][:, None].float() / 255
    assert_parity(reference_forward(ckpt["model"], ckpt["args"], x), case["embedding"])


SUBSETS = [(t, s, j) for t in (0, 1) for s in (0, 1) for j in (0, 1) if t or s or j]
CONFIGS = (
    [dict(use_temporal=bool(t), use_spatial=bool(s), use_joint=bool(j)) for t, s, j in SUBSETS]
    + [dict(use_temporal=bool(t), use_spatial=bool(s), use_joint=True, joint_type="dynamic")
       for t, s, j in SUBSETS if j]
    + [dict(num_stripes=s) for s in (1, 3, 6, 10)]
    + [dict(num_stripes=3, joint_type="dynamic", pooling_soft=True, pooling_temperature=0.5),
       dict(joint_type="dynamic", dynamic_experts=3, dynamic_gate_hidden=12, num_stripes=6),
       dict(pooling_soft=True, pooling_temperature=2.0, num_stripes=10),
       dict(pooling_topk=4, num_stripes=6, use_spatial=False),
       dict(base_channels=16, embedding_dim=32, joint_type="dynamic", pooling_soft=True)]
)


@pytest.mark.parametrize("over", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_random_weights_parity(tmp_path, over):
    args = make_args(**over)
    sd = random_state(args, seed=len(tmp_path.name))
    path = tmp_path / "ckpt.pt"
    save_original(path, sd, args)
    model = load_reference_checkpoint(path)
    x = silhouettes(2, 5, 44, 8, seed=1)  # H=44 is not divisible by 3, 6, 8 or 10 (nor 11 at block3)
    with torch.no_grad():
        got = model(x)["embedding"]
        want = reference_forward(sd, args, x)
    assert_parity(got, want)


def test_args_translation():
    kw = reference_args_to_kwargs(make_args(pooling_soft=True, pooling_temperature=0.3, pooling_topk=5,
                                            joint_type="dynamic", dynamic_gate_hidden=20))
    assert kw["pooling"] == "soft" and kw["temperature"] == 0.3 and kw["topk"] == 5
    assert kw["joint_type"] == "dynamic" and kw["dynamic_gate_hidden"] == 20
    assert kw["kernels"] == ((3, 7, 3), (3, 5, 3), (3, 3, 3)) and kw["branch_width"] == "half_split"
    assert "lr" not in kw and "height" not in kw
    LSTCBackbone(**kw)  # every key is a real constructor argument
    assert reference_args_to_kwargs({})["num_stripes"] == 8  # originals' defaults fill gaps


def test_dynamic_accepts_linear_shaped_gate_and_bias(tmp_path):
    args = make_args(joint_type="dynamic", num_stripes=4)
    sd = random_state(args, seed=3)
    want_x = silhouettes(2, 5, 44, 8, seed=2)
    with torch.no_grad():
        want = reference_forward(sd, args, want_x)
    alt = dict(sd)
    for blk in ("block1", "block2", "block3"):
        for i in (0, 2):
            key = f"{blk}.branch_joint.gate.{i}.weight"
            alt[key] = sd[key].flatten(1)  # Linear-shaped (out, in)
        m = sd[f"{blk}.branch_joint.weight"].shape[1]
        alt[f"{blk}.branch_joint.bias"] = torch.zeros(m)  # an explicit zero bias changes nothing
    save_original(tmp_path / "a.pt", alt, args)
    with torch.no_grad():
        got = load_reference_checkpoint(tmp_path / "a.pt")(want_x)["embedding"]
    assert_parity(got, want)
    bad = dict(alt)
    bad["block2.branch_joint.bias"] = torch.zeros(5, 5, 5)
    save_original(tmp_path / "b.pt", bad, args)
    with pytest.raises(CheckpointFormatError, match="block2.branch_joint.bias"):
        load_reference_checkpoint(tmp_path / "b.pt")


def test_load_reference_weights_warm_start():
    ckpt = torch.load(CKPT, weights_only=False)
    model = build_gait_model(num_classes=5, **reference_args_to_kwargs(ckpt["args"]))
    load_reference_weights(model, CKPT)
    for k, v in ckpt["model"].items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    # pooling settings do not shape weights: a soft-pooling model warm-starts too
    soft = build_gait_model(num_classes=0, **{**reference_args_to_kwargs(ckpt["args"]), "pooling": "soft"})
    load_reference_weights(soft, CKPT)
    other = build_gait_model(num_classes=5, num_stripes=6)
    with pytest.raises(CheckpointFormatError, match="num_stripes"):
        load_reference_weights(other, CKPT)


def test_malformed_files(tmp_path):
    with pytest.raises(CheckpointFormatError, match="does not exist"):
        load_reference_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="garbage.pt"):
        load_reference_checkpoint(tmp_path / "garbage.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointFormatError, match="list"):
        load_reference_checkpoint(tmp_path / "list.pt")
    torch.save({"model": {}}, tmp_path / "noargs.pt")
    with pytest.raises(CheckpointFormatError, match="args"):
        load_reference_checkpoint(tmp_path / "noargs.pt")

    ckpt = torch.load(CKPT, weights_only=False)
    sd = dict(ckpt["model"])
    del sd["block2.fuse.1.running_var"]
    sd["block9.extra.weight"] = torch.zeros(1)
    save_original(tmp_path / "keys.pt", sd, ckpt["args"])
    with pytest.raises(CheckpointFormatError) as info:
        load_reference_checkpoint(tmp_path / "keys.pt")
    msg = str(info.value)
    assert "block2.fuse.1.running_var" in msg and "block9.extra.weight" in msg and "keys.pt" in msg

    save_original(tmp_path / "shape.pt", ckpt["model"], {**ckpt["args"], "embedding_dim": 128})
    with pytest.raises(CheckpointFormatError, match=r"fc\.weight"):
        load_reference_checkpoint(tmp_path / "shape.pt")
    assert issubclass(CheckpointFormatError, ValueError)


def test_checkpoint_without_num_batches_tracked(tmp_path):
    ckpt = torch.load(CKPT, weights_only=False)
    sd = {k: v for k, v in ckpt["model"].items() if not k.endswith("num_batches_tracked")}
    save_original(tmp_path / "old.pt", sd, ckpt["args"])
    case = torch.load(CASE, weights_only=False)
    with torch.no_grad():
        got = load_reference_checkpoint(tmp_path / "old.pt")(case["silhouettes"][:, None].float() / 255)
    assert_parity(got["embedding"], case["embedding"])


def test_prefixed_reference_checkpoints_load_everywhere(tmp_path):
    """DataParallel / DDP / torch.compile prefixes: the importer and init_from's warm start both load."""
    ckpt = torch.load(CKPT, weights_only=False)
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        path = tmp_path / f"{prefix.strip('.').replace('.', '_')}.pt"
        torch.save({**ckpt, "model": {prefix + k: v for k, v in ckpt["model"].items()}}, path)
        backbone = load_reference_checkpoint(path)
        for k, v in ckpt["model"].items():
            assert torch.equal(backbone.state_dict()[k], v), (prefix, k)
        model = build_gait_model(num_classes=3, **reference_args_to_kwargs(ckpt["args"]))
        load_reference_weights(model, path)
        assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in ckpt["model"].items())
