"""evaluate / extract / export: embeddings npz, protocols on foreign embeddings, checkpoints, TorchScript."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lstc_gait.data.selection import select_sequences
from lstc_gait.engine.checkpoint import load_model
from lstc_gait.errors import UserError
from lstc_gait.evaluation.embeddings_io import load_embeddings, save_embeddings
from lstc_gait.pipelines.evaluate import evaluate as run_evaluate
from lstc_gait.pipelines.export import export as run_export
from lstc_gait.pipelines.extract import extract as run_extract

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "lstc_gait" / "conf")
REFERENCE_CKPT = ROOT / "tests" / "fixtures" / "lstc_b16_hard_s8.pt"
TINY_MODEL = dict(base_channels=8, num_stripes=4, embedding_dim=32)


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def _casia_like() -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Two subjects (A at x=0, B at x=10), views 000/090. Every sequence sits on its subject except
    A's two CL probes at view 000, which sit on B: CL rank-1 is 50% at probe view 000 (2 of 4 probes
    matched to gallery view 090 are right) and 100% at 090, so CL mean = 75; NM and BG are 100."""
    types = [f"nm-0{i}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]
    emb, subjects, tys, views = [], [], [], []
    for s, centre in (("A", 0.0), ("B", 10.0)):
        for t in types:
            for k, v in enumerate(("000", "090")):
                x = 10.0 if (s == "A" and t.startswith("cl") and v == "000") else centre
                emb.append([x, 0.01 * k, 0.02 * len(emb) % 0.1])
                subjects.append(s)
                tys.append(t)
                views.append(v)
    return np.asarray(emb, np.float32), subjects, tys, views


def test_npz_roundtrip_and_clear_errors(tmp_path):
    emb, s, t, v = _casia_like()
    path = save_embeddings(tmp_path / "e.npz", emb, s, t, v, meta={"checkpoint": "x.pt"}, seqs=["0"] * len(s))
    back = load_embeddings(path)
    np.testing.assert_array_equal(back.embeddings, emb)
    assert back.subjects.tolist() == s and back.views.tolist() == v and back.meta == {"checkpoint": "x.pt"}

    np.savez(tmp_path / "bad.npz", embeddings=emb, subjects=np.asarray(s))
    with pytest.raises(UserError, match="lacks array\\(s\\) types, views"):
        load_embeddings(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", embeddings=emb, subjects=np.asarray(s[:-1]), types=np.asarray(t),
             views=np.asarray(v))
    with pytest.raises(UserError, match="subjects has shape"):
        load_embeddings(tmp_path / "short.npz")
    with pytest.raises(UserError, match="does not exist"):
        load_embeddings(tmp_path / "missing.npz")
    with pytest.raises(UserError, match="3 entries for 40"):
        save_embeddings(tmp_path / "x.npz", emb, s[:3], t, v)


def test_evaluate_foreign_embeddings_hand_computed(tmp_path):
    from lstc_gait.evaluation import read_table

    emb, s, t, v = _casia_like()
    npz = save_embeddings(tmp_path / "foreign.npz", emb, s, t, v, meta={"checkpoint": "other-framework"})
    cfg = compose("evaluate", [f"embeddings={npz}", "protocol=casia_b", f"out_dir={tmp_path / 'ev'}"])
    out = run_evaluate(cfg, tmp_path)
    rank1 = out["tables"]["rank1"]
    assert rank1.loc["NM", "mean"] == pytest.approx(100.0) and rank1.loc["BG", "mean"] == pytest.approx(100.0)
    assert rank1.loc["CL", "000"] == pytest.approx(50.0) and rank1.loc["CL", "090"] == pytest.approx(100.0)
    assert out["metrics"]["CL/rank1"] == pytest.approx(75.0)
    table, header = read_table(tmp_path / "ev" / "rank1.csv")
    assert table.loc["CL", "mean"] == pytest.approx(75.0)
    assert header["protocol"] == "casia_b" and header["distance"] == "euclidean"
    assert header["checkpoint"] == "other-framework" and header["misses_counted"].startswith("yes")
    # retrieval on the same file: the two displaced CL probes of A rank B first
    ret = run_evaluate(compose("evaluate", [f"embeddings={npz}", "protocol=retrieval",
                                            f"out_dir={tmp_path / 'ret'}"]), tmp_path)
    assert 0.0 < ret["metrics"]["mAP"] < 100.0


def test_evaluate_cli_reports_bad_input(tmp_path):
    run = subprocess.run([sys.executable, "-m", "lstc_gait.evaluate", "embeddings=nope.npz"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "embeddings file" in run.stderr and "nope.npz" in run.stderr
    assert "Traceback" not in run.stderr


def _platform_checkpoint(path: Path, dataset_node: dict) -> tuple[dict, dict]:
    """A checkpoint in the platform's format whose EMA weights differ from its raw weights."""
    from lstc_gait.engine.checkpoint import save_checkpoint
    from lstc_gait.models import build_gait_model

    torch.manual_seed(0)
    model = build_gait_model(4, **TINY_MODEL).eval()
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: (v + 0.05 * torch.randn_like(v)) if v.dtype.is_floating_point and "running" not in k else v.clone()
           for k, v in raw.items()}
    config = {"model": {"_target_": "lstc_gait.models.build_gait_model", **TINY_MODEL},
              "dataset": dataset_node, "trainer": {"shrink_synthetic": None}}
    save_checkpoint({"model": raw, "ema": {"module": ema, "updates": 3, "decay": 0.9}, "config": config,
                     "step": 3}, path)
    return raw, ema


@pytest.fixture(scope="module")
def tiny_dataset_node(tiny_data_dir):
    from omegaconf import OmegaConf

    from tests.conftest import compose as compose_train

    cfg = compose_train(["trainer=debug"])
    node = OmegaConf.to_container(cfg.dataset, resolve=True)
    node["synthetic"] = {**node["synthetic"], **OmegaConf.to_container(cfg.trainer.shrink_synthetic)}
    return node


def test_platform_checkpoint_prefers_ema(tmp_path, tiny_dataset_node):
    raw, ema = _platform_checkpoint(tmp_path / "p.pt", tiny_dataset_node)
    loaded = load_model(tmp_path / "p.pt")
    assert loaded.kind == "platform" and loaded.weights == "ema"
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, ema[k])
    plain = load_model(tmp_path / "p.pt", use_ema=False)
    assert plain.weights == "model"
    key = next(k for k in raw if raw[k].dtype.is_floating_point and "running" not in k)
    assert not torch.equal(raw[key], ema[key])
    torch.testing.assert_close(plain.model.state_dict()[key], raw[key])
    torch.save({"something": 1}, tmp_path / "junk.pt")
    with pytest.raises(UserError, match="neither a platform checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_extract_then_evaluate_matches_direct_evaluation(tmp_path, tiny_data_dir, tiny_dataset_node):
    """extract -> npz -> evaluate gives the numbers of evaluate(checkpoint); embeddings equal the model's."""

    ckpt = tmp_path / "p.pt"
    _platform_checkpoint(ckpt, tiny_dataset_node)
    common = [f"checkpoint={ckpt}", f"paths.data_dir={tiny_data_dir}", "progress=false", "batch_size=16"]
    npz = run_extract(compose("extract", common + [f"out={tmp_path / 'e.npz'}"]), tmp_path)
    es = load_embeddings(npz)
    assert es.meta["weights"] == "ema" and es.meta["protocol"] == "casia_b"
    assert len(set(es.subjects)) == 2 and es.embeddings.shape[1] == TINY_MODEL["embedding_dim"]

    # the first stored embedding is the EMA model on that whole sequence
    sel = select_sequences(tiny_dataset_node, tiny_data_dir, "test", progress=False)
    frames = torch.from_numpy(sel.cache.frames(int(sel.rows[0]))[:, :, 10:54].copy())
    model = load_model(ckpt).model
    with torch.no_grad():
        direct = model(frames[None, None].float() / 255, torch.tensor([frames.shape[0]]))["embedding"][0]
    np.testing.assert_allclose(es.embeddings[0], direct.numpy(), rtol=1e-4, atol=1e-5)

    via_npz = run_evaluate(compose("evaluate", [f"embeddings={npz}", f"out_dir={tmp_path / 'a'}"]), tmp_path)
    direct_eval = run_evaluate(compose("evaluate", common + [f"out_dir={tmp_path / 'b'}"]), tmp_path)
    for key in ("NM/rank1", "BG/rank1", "CL/rank1", "mAP"):
        assert via_npz["metrics"][key] == pytest.approx(direct_eval["metrics"][key])

    capped = run_extract(compose("extract", common + ["max_frames=5", f"out={tmp_path / 'c.npz'}"]), tmp_path)
    with torch.no_grad():
        first5 = model(frames[None, None, :5].float() / 255, torch.tensor([5]))["embedding"][0]
    np.testing.assert_allclose(load_embeddings(capped).embeddings[0], first5.numpy(), rtol=1e-4, atol=1e-5)


def test_reference_checkpoint_loads_for_evaluation():
    loaded = load_model(REFERENCE_CKPT)
    assert loaded.kind == "reference" and loaded.input_size == (64, 44)
    case = torch.load(ROOT / "tests" / "fixtures" / "lstc_b16_hard_s8.case.pt", weights_only=False)
    x = case["silhouettes"][:, None].float() / 255
    with torch.no_grad():
        out = loaded.model(x)["embedding"]
    torch.testing.assert_close(out, case["embedding"], rtol=1e-4, atol=1e-4)


def test_export_torchscript_dynamic_shapes_and_parity(tmp_path, capsys):
    from lstc_gait import exporting as X
    from lstc_gait.models import build_gait_model

    torch.manual_seed(1)
    model = build_gait_model(0, **TINY_MODEL).eval()
    path, result, method = X.export_torchscript(model, tmp_path / "m.ts", shapes=((2, 12), (1, 7), (3, 17)))
    assert result.passed and len(result.rows) == 3 and result.min_cosine >= 0.9999
    scripted = torch.jit.load(str(path))
    x, lengths = X.example_inputs(5, 11)  # a batch size and length the parity check did not use
    with torch.no_grad():
        ref = model(x, lengths)["embedding"]
        got = scripted(x, lengths)
    assert got.shape == (5, TINY_MODEL["embedding_dim"])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)

    # an export that disagrees with eager mode fails the parity check, and nothing is left behind
    with pytest.raises(X.ExportError, match="does not match eager"):
        X.export_torchscript(_DriftsWhenExported(model), tmp_path / "bad.ts", shapes=((3, 12),))
    assert not (tmp_path / "bad.ts").exists()


def test_export_keeps_the_model_input_resize_and_parts_head(tmp_path):
    # experiment=casia_b_cpu's kind of model: the resize to 32 x 22 is inside the exported graph,
    # which takes the cache's 64 x 44 frames like the eager model.
    from lstc_gait import exporting as X
    from lstc_gait.models import build_gait_model

    torch.manual_seed(2)
    model = build_gait_model(0, head="parts", part_dim=16, input_size=(32, 22), pooling="set",
                             **TINY_MODEL).eval()
    path, result, _ = X.export_torchscript(model, tmp_path / "m.ts", shapes=((2, 9), (1, 5)))
    assert result.passed and result.min_cosine >= 0.9999
    x, lengths = X.example_inputs(3, 7)
    assert x.shape[-2:] == (64, 44)
    with torch.no_grad():
        ref = model(x, lengths)["embedding"]
        got = torch.jit.load(str(path))(x, lengths)
    assert got.shape == (3, 16, TINY_MODEL["num_stripes"])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


class _DriftsWhenExported(torch.nn.Module):
    """Eager mode is the model; the exported graph (scripted or traced) permutes the embedding."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        out = self.model(x, lengths)
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return {"embedding": out["embedding"].roll(1, dims=1)}
        return out


def test_export_cli(tmp_path, tiny_dataset_node):
    ckpt = tmp_path / "tiny.pt"
    _platform_checkpoint(ckpt, tiny_dataset_node)
    run = subprocess.run([sys.executable, "-m", "lstc_gait.export", f"checkpoint={ckpt}", f"out_dir={tmp_path}",
                          "parity_shapes=[[2,10],[1,6]]"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "(platform, ema weights)" in run.stdout and "PASS" in run.stdout and (tmp_path / "tiny.ts").is_file()
    from lstc_gait.exporting import onnx_available

    if onnx_available():
        assert (tmp_path / "tiny.onnx").is_file() and run.stdout.count("PASS") == 2
    else:
        assert "ONNX skipped" in run.stdout and not (tmp_path / "tiny.onnx").exists()


    with pytest.raises(UserError, match="none.pt' does not exist"):
        run_export(compose("export", [f"checkpoint={tmp_path / 'none.pt'}"]), tmp_path)
