"""The one checkpoint reader: old-format fixtures keep loading with identical embeddings, wrapper
prefixes are stripped in both kinds, the format is versioned, and every failure is one error class."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lstc_gait.engine.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_model,
    model_from_stored_config,
    read_checkpoint,
    save_checkpoint,
    strip_prefixes,
)
from lstc_gait.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1 = FIXTURES / "checkpoint_v1" / "platform_v1.pt"
V1_EXPECTED = FIXTURES / "checkpoint_v1" / "platform_v1_expected.pt"
REFERENCE = FIXTURES / "lstc_b16_hard_s8.pt"


def _embed(model, expected):
    with torch.no_grad():
        return model(expected["input"], expected["lengths"])["embedding"]


def test_version1_checkpoint_gives_the_embeddings_it_gave_before_the_refactor():
    """platform_v1.pt was written by commit 5c1bf82 (tests/fixtures/checkpoint_v1/make_fixture.py)."""
    expected = torch.load(V1_EXPECTED, weights_only=False)
    ckpt = read_checkpoint(V1)
    assert ckpt.kind == "platform" and ckpt.format_version == 1 and ckpt.is_training_state
    assert "variant" not in ckpt.config["model"]  # written before model variants were registered
    ema = load_model(V1)
    assert ema.weights == "ema"
    torch.testing.assert_close(_embed(ema.model, expected), expected["embedding_ema"], rtol=0, atol=1e-6)
    raw = load_model(V1, use_ema=False)
    torch.testing.assert_close(_embed(raw.model, expected), expected["embedding_model"], rtol=0, atol=1e-6)


def test_stored_config_without_new_keys_means_the_legacy_model():
    ckpt = read_checkpoint(V1)
    stored = dict(ckpt.config["model"])
    for key in ("branch_width", "min_branch_width", "joint_type", "dynamic_experts", "pooling", "topk",
                "temperature", "_target_"):
        stored.pop(key)  # a config lacking keys: each missing one means the version-1 behaviour
    model = model_from_stored_config(stored, ckpt.num_classes)
    state, _ = ckpt.weights(use_ema=True)
    model.load_state_dict(state)
    assert model.backbone.config["joint_type"] == "lstc"
    expected = torch.load(V1_EXPECTED, weights_only=False)
    torch.testing.assert_close(_embed(model.eval(), expected), expected["embedding_ema"], rtol=0, atol=1e-6)


def test_new_checkpoints_carry_the_format_version_and_resave_identically(tmp_path):
    state = torch.load(V1, weights_only=False)
    out = save_checkpoint(state, tmp_path / "v2.pt")
    ckpt = read_checkpoint(out)
    assert ckpt.format_version == FORMAT_VERSION and ckpt.state["format_version"] == FORMAT_VERSION
    expected = torch.load(V1_EXPECTED, weights_only=False)
    torch.testing.assert_close(_embed(load_model(out).model, expected), expected["embedding_ema"], rtol=0, atol=1e-6)
    torch.save({**state, "format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="upgrade"):
        read_checkpoint(tmp_path / "future.pt")


def _wrap(state, prefix):
    return {prefix + k: v for k, v in state.items()}


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.",
                                    "module.module."])
def test_wrapper_prefixes_are_stripped_in_platform_checkpoints(tmp_path, prefix):
    state = torch.load(V1, weights_only=False)
    state["model"] = _wrap(state["model"], prefix)
    state["ema"] = {**state["ema"], "module": _wrap(state["ema"]["module"], prefix)}
    torch.save(state, tmp_path / "wrapped.pt")
    ckpt = read_checkpoint(tmp_path / "wrapped.pt")
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt.model_state)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt.state["ema"]["module"])
    expected = torch.load(V1_EXPECTED, weights_only=False)
    torch.testing.assert_close(_embed(load_model(tmp_path / "wrapped.pt").model, expected),
                               expected["embedding_ema"], rtol=0, atol=1e-6)


def test_wrapper_prefixes_are_stripped_in_reference_checkpoints(tmp_path):
    ref = torch.load(REFERENCE, weights_only=False)
    torch.save({**ref, "model": _wrap(ref["model"], "module._orig_mod.")}, tmp_path / "ddp_compiled.pt")
    ckpt = read_checkpoint(tmp_path / "ddp_compiled.pt")
    assert ckpt.kind == "reference" and ckpt.format_version == 0
    assert set(ckpt.model_state) == set(ref["model"])
    case = torch.load(FIXTURES / "lstc_b16_hard_s8.case.pt", weights_only=False)
    with torch.no_grad():
        got = load_model(tmp_path / "ddp_compiled.pt").model(case["silhouettes"][:, None].float() / 255)
    torch.testing.assert_close(got["embedding"], case["embedding"], rtol=1e-4, atol=1e-4)


def test_strip_prefixes_leaves_inner_names_alone():
    assert list(strip_prefixes({"module.a.module.b": 1, "x": 2})) == ["a.module.b", "x"]


def test_every_failure_is_one_user_error_class(tmp_path):
    assert issubclass(CheckpointError, UserError) and issubclass(CheckpointError, ValueError)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"something": 1}, tmp_path / "junk.pt")
    for path, match in ((tmp_path / "missing.pt", "does not exist"), (tmp_path / "garbage.pt", "cannot read"),
                        (tmp_path / "junk.pt", "neither a platform checkpoint")):
        with pytest.raises(CheckpointError, match=match):
            load_model(path)
    from lstc_gait.compat import CheckpointFormatError, load_reference_checkpoint
    from lstc_gait.engine.checkpoint import read_training_state

    assert CheckpointFormatError is CheckpointError
    with pytest.raises(CheckpointError, match="platform checkpoint"):
        load_reference_checkpoint(V1)
    with pytest.raises(CheckpointError, match="init_from"):
        read_training_state(REFERENCE)


def test_checkpoint_files_get_the_umask_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = save_checkpoint({"model": {}, "config": {}}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644
