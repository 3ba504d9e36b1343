"""Library side of ``python -m lstc_gait.evaluate`` and ``python -m lstc_gait.extract``.

Load a model from a checkpoint (the platform's own, EMA weights preferred, or an original lstc-gait
checkpoint), pick the sequences of a split, embed them, save/load embeddings as ``.npz``, run a
protocol on embeddings computed anywhere, and write the per-view tables. Everything takes explicit
arguments; the entry points translate Hydra config into these calls.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

NPZ_KEYS = ("embeddings", "subjects", "types", "views")
PROTOCOLS = ("casia_b", "ou_mvlp", "retrieval")
SPLITS = ("test", "train", "all")


class CommandError(ValueError):
    """Bad user input to a command (missing file, wrong format, unknown option); message names it."""


def run_command(name: str, body: Callable[[], Any], user_errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run a command's body; user errors become one line on stderr and exit code 2, not a stack trace."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        body()
    except (MissingMandatoryValue, CommandError, FileNotFoundError, ValueError, *user_errors) as exc:
        print(f"lstc_gait.{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    """A model ready for inference and where its weights came from."""

    model: nn.Module
    kind: str  # "platform" | "reference"
    weights: str  # "ema" | "model" | "reference"
    path: str
    config: dict[str, Any] | None = None  # the resolved training config (platform checkpoints)
    input_size: tuple[int, int] = (64, 44)
    extra: dict[str, Any] = field(default_factory=dict)


def _torch_load(path: str | os.PathLike) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"checkpoint {str(p)!r} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle errors, truncated files, ...
        raise CommandError(f"cannot read checkpoint {str(p)!r}: {exc}") from exc


def is_reference_checkpoint(ckpt: Any) -> bool:
    """The original lstc-gait format: ``model`` state dict plus ``args`` with its training flags."""
    return (isinstance(ckpt, Mapping) and isinstance(ckpt.get("args"), Mapping)
            and isinstance(ckpt.get("model"), Mapping) and "base_channels" in ckpt["args"])


def _state_dict_of(obj: Any) -> Mapping[str, torch.Tensor] | None:
    """A state dict from an EMA/model entry (plain state dict, or a dict wrapping one)."""
    if not isinstance(obj, Mapping):
        return None
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in ("state_dict", "shadow", "model", "module", "averaged", "params"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return None


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DDP and torch.compile wrap parameters as module.* / _orig_mod.*
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _plain_config(cfg: Any) -> dict[str, Any] | None:
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, str):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # type: ignore[return-value]
    return None


def model_kwargs_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Backbone keyword arguments from a resolved training config's ``model`` node."""
    model_cfg = dict(config.get("model") or {})
    if not model_cfg:
        raise CommandError("the checkpoint's config has no `model` section")
    model_cfg.pop("_target_", None)
    if "kernels" in model_cfg:
        model_cfg["kernels"] = tuple(tuple(int(x) for x in k) for k in model_cfg["kernels"])
    return model_cfg


def load_model(path: str | os.PathLike, use_ema: bool = True) -> LoadedModel:
    """Build an eval-mode model from a checkpoint file.

    Original lstc-gait checkpoints go through ``lstc_gait.compat.load_reference_checkpoint``.
    Platform checkpoints rebuild ``GaitModel`` from the resolved config they carry and load the EMA
    weights when present (``use_ema``), else the raw model weights.
    """
    ckpt = _torch_load(path)
    if is_reference_checkpoint(ckpt):
        from lstc_gait.compat import load_reference_checkpoint

        try:
            model = load_reference_checkpoint(str(path))
        except Exception as exc:
            raise CommandError(f"cannot import original lstc-gait checkpoint {str(path)!r}: {exc}") from exc
        args = ckpt["args"]
        size = (int(args.get("height", 64)), int(args.get("width", 44)))
        return LoadedModel(model.eval(), "reference", "reference", str(path), None, size,
                           {"epoch": ckpt.get("epoch"), "num_classes": ckpt.get("num_classes")})
    if not isinstance(ckpt, Mapping) or "model" not in ckpt:
        keys = ", ".join(map(str, ckpt.keys())) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CommandError(f"{str(path)!r} is neither a platform checkpoint (keys model, config, ema) nor an "
                           f"original lstc-gait checkpoint (keys model, args); it holds: {keys}")
    config = _plain_config(ckpt.get("config") or ckpt.get("cfg"))
    if config is None:
        raise CommandError(f"checkpoint {str(path)!r} has no resolved `config`; cannot rebuild its model")
    model_state = _state_dict_of(ckpt["model"])
    ema_state = _state_dict_of(ckpt.get("ema")) if use_ema else None
    state, weights = (ema_state, "ema") if ema_state is not None else (model_state, "model")
    if state is None:
        raise CommandError(f"checkpoint {str(path)!r}: `model` is not a state dict")
    state = _strip_prefixes(state)
    from lstc_gait.models import build_gait_model

    num_classes = ckpt.get("num_classes")
    if num_classes is None:  # the classifier's output width; 0 when the model was saved without one
        heads = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2
                 and any(t in k for t in ("classifier", "logits", "cls"))]
        num_classes = int(heads[0].shape[0]) if heads else 0
    try:
        model = build_gait_model(int(num_classes), **model_kwargs_from_config(config))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (TypeError, RuntimeError) as exc:
        raise CommandError(f"checkpoint {str(path)!r} does not fit the model its config describes: {exc}") from exc
    # EMA state may omit the classifier; the embedding path must be complete
    bad = [k for k in missing if "classifier" not in k and "logits" not in k]
    if bad or unexpected:
        raise CommandError(f"checkpoint {str(path)!r}: weights do not match the model "
                           f"(missing {bad[:5]}, unexpected {list(unexpected)[:5]})")
    width = int((config.get("dataset") or {}).get("width", 44))
    return LoadedModel(model.eval(), "platform", weights, str(path), config, (64, width),
                       {"step": ckpt.get("step"), "num_classes": int(num_classes)})


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch understands it."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise CommandError(f"device={device!r} is not a torch device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"device={device!r} requested but CUDA is not available")
    return dev


# ------------------------------------------------------------------------------------------- sequences


def select_rows(index: Any, split: str, split_protocol: str, partition_file: str | None = None,
                test_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """Cache rows of the chosen subjects: the split's ``test`` or ``train`` side, or ``all``."""
    from lstc_gait.data import split_subjects

    if split not in SPLITS:
        raise CommandError(f"split={split!r} is not one of: {', '.join(SPLITS)}")
    subjects = index["subject"].astype(str)
    if split == "all":
        return np.arange(len(index), dtype=np.int64)
    train, test = split_subjects(subjects.tolist(), split_protocol, partition_file=partition_file,
                                 test_fraction=test_fraction, seed=seed)
    keep = set(test if split == "test" else train)
    return np.flatnonzero(subjects.isin(keep).to_numpy()).astype(np.int64)


def embed_rows(model: nn.Module, cache: Any, rows: np.ndarray, width: int = 44, max_frames: int | None = None,
               batch_size: int = 8, device: str = "auto", amp: bool = False, num_workers: int = 0,
               progress: bool = True) -> np.ndarray:
    """Embeddings (N, D) float32 of whole sequences ``rows`` of ``cache``, in row order."""
    from lstc_gait.data import TestSequenceDataset
    from lstc_gait.evaluation import extract_embeddings

    dataset = TestSequenceDataset(cache, rows, width=width, max_frames=max_frames)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    out = extract_embeddings(model, dataset, batch_size=batch_size, device=dev, amp=amp,
                             num_workers=num_workers, progress=progress)
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------------- npz


@dataclass
class EmbeddingSet:
    embeddings: np.ndarray  # (N, D) float32
    subjects: np.ndarray  # (N,) str
    types: np.ndarray
    views: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def save_embeddings(path: str | os.PathLike, embeddings: np.ndarray, subjects: Sequence[str],
                    types: Sequence[str], views: Sequence[str], meta: Mapping[str, Any] | None = None,
                    **extra: Sequence[Any]) -> Path:
    """Write an ``.npz`` with ``embeddings, subjects, types, views`` (+ extra per-row arrays and a JSON
    ``meta`` string) atomically. Labels are stored as unicode strings so any tool can read them."""
    emb = np.asarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    arrays: dict[str, np.ndarray] = {"embeddings": emb}
    for key, values in {"subjects": subjects, "types": types, "views": views, **extra}.items():
        arr = np.asarray([str(v) for v in values])
        if arr.shape[0] != n:
            raise CommandError(f"{key} has {arr.shape[0]} entries for {n} embeddings")
        arrays[key] = arr
    arrays["meta"] = np.asarray(json.dumps(dict(meta or {}), default=str))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def load_embeddings(path: str | os.PathLike) -> EmbeddingSet:
    """Read and check an embeddings ``.npz`` (from ``lstc_gait.extract`` or any other framework)."""
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"embeddings file {str(p)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as data:
            present = set(data.files)
            missing = [k for k in NPZ_KEYS if k not in present]
            if missing:
                raise CommandError(f"{str(p)!r} lacks array(s) {', '.join(missing)}; an embeddings npz holds "
                                   f"{', '.join(NPZ_KEYS)} (it has {', '.join(sorted(present)) or 'nothing'})")
            emb = np.asarray(data["embeddings"])
            labels = {k: np.asarray(data[k]).astype(str) for k in NPZ_KEYS[1:]}
            meta = json.loads(str(data["meta"])) if "meta" in present else {}
    except CommandError:
        raise
    except Exception as exc:  # zip/pickle/format errors
        raise CommandError(f"cannot read embeddings file {str(p)!r}: {exc}") from exc
    # (N, C, parts) part features stay 3-D: the protocols average the per-part distances.
    if emb.ndim not in (2, 3) or emb.shape[0] == 0:
        raise CommandError(f"{str(p)!r}: embeddings must be a non-empty (N, D) or (N, C, parts) array, "
                           f"got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise CommandError(f"{str(p)!r}: embeddings have non-numeric dtype {emb.dtype}")
    for key, arr in labels.items():
        if arr.shape != (emb.shape[0],):
            raise CommandError(f"{str(p)!r}: {key} has shape {arr.shape}, expected ({emb.shape[0]},)")
    emb = emb.astype(np.float32)
    if not np.isfinite(emb).all():
        raise CommandError(f"{str(p)!r}: embeddings contain NaN or inf")
    return EmbeddingSet(emb, labels["subjects"], labels["types"], labels["views"], meta)


# ---------------------------------------------------------------------------------------------- protocol


def run_protocol(protocol: str, embeddings: np.ndarray, subjects: Sequence[str], types: Sequence[str],
                 views: Sequence[str], metric: str = "euclidean") -> tuple[dict[str, Any], dict[str, float]]:
    """(tables, metrics) of a protocol (``casia_b``, ``ou_mvlp``, ``retrieval``) on labelled embeddings."""
    if protocol not in PROTOCOLS:
        raise CommandError(f"protocol={protocol!r} is not one of: {', '.join(PROTOCOLS)}")
    if metric not in ("euclidean", "cosine"):
        raise CommandError(f"metric={metric!r} is not one of: euclidean, cosine")
    from lstc_gait.evaluation import protocol_metrics

    return protocol_metrics(protocol, np.asarray(embeddings, dtype=np.float32), np.asarray(subjects).astype(str),
                            np.asarray(types).astype(str), np.asarray(views).astype(str), metric)


def table_header(protocol: str, metric: str, checkpoint: str, split: str) -> dict[str, str]:
    """What every table states: protocol, distance, checkpoint, split (misses are set per table)."""
    return {"protocol": protocol, "distance": metric, "checkpoint": checkpoint, "split": split}


def misses_policy(protocol: str, table_name: str) -> str:
    """How a table treats probes whose subject has no gallery sequence at a view."""
    if protocol == "retrieval":
        return "n/a (queries without a positive in the gallery are skipped and counted)"
    if "excl_missing" in table_name:
        return "no (probes without a gallery sequence of their subject at that view excluded)"
    return "yes (probes without a gallery sequence of their subject at that view count as misses)"


def write_tables(tables: Mapping[str, Any], out_dir: str | os.PathLike,
                 header: Mapping[str, str]) -> dict[str, list[Path]]:
    """Each table as CSV + Markdown (``evaluation.tables.write_table``); returns {table name: paths}."""
    import pandas as pd

    from lstc_gait.evaluation.tables import write_table

    written: dict[str, list[Path]] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protocol = str(header.get("protocol", ""))
    for name, table in tables.items():
        if isinstance(table, Mapping):
            table = pd.DataFrame([table])
        if not isinstance(table, pd.DataFrame):
            continue
        stem = str(name).replace("/", "_").replace(" ", "_")
        full = {**header, "misses_counted": misses_policy(protocol, str(name))}
        csv_path, md_path = write_table(table, out / stem, full)
        written[str(name)] = [Path(csv_path), Path(md_path)]
    return written


# ---------------------------------------------------------------------------------------------- datasets


def effective_dataset_node(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The dataset a platform checkpoint was trained on, as its run really built it: the ``dataset``
    node with ``trainer.shrink_synthetic`` (trainer=debug's tiny SynthGait) applied when synthetic."""
    if not config or not isinstance(config.get("dataset"), Mapping):
        return None
    node = json.loads(json.dumps(config["dataset"], default=str))
    shrink = (config.get("trainer") or {}).get("shrink_synthetic")
    if shrink and isinstance(node.get("synthetic"), Mapping):
        node["synthetic"] = {**node["synthetic"], **dict(shrink)}
    return node


@dataclass
class SequenceSelection:
    cache: Any  # SequenceCache
    cache_dir: Path
    rows: np.ndarray
    dataset: Any  # DatasetConfig
    split: str

    def labels(self) -> dict[str, np.ndarray]:
        index = self.cache.index.iloc[self.rows]
        return {k: index[c].astype(str).to_numpy() for k, c in
                (("subjects", "subject"), ("types", "type"), ("views", "view"), ("seqs", "seq"))}


def select_sequences(dataset_node: Any, data_dir: str | os.PathLike, split: str = "test",
                     base_dir: str | os.PathLike | None = None, progress: bool = True) -> SequenceSelection:
    """Make the dataset's cache ready (generating / preparing it if needed) and pick the split's rows.

    Relative paths in the dataset node resolve against ``base_dir`` (the launch folder)."""
    from lstc_gait.data import open_cache
    from lstc_gait.data.config import dataset_config_from, resolve_cache

    ds = dataset_config_from(dataset_node)
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    def absolute(p: str | None) -> str | None:
        return None if not p else str(p if Path(p).is_absolute() else base / p)

    ds.root, ds.cache_dir, ds.partition_file = absolute(ds.root), absolute(ds.cache_dir), absolute(ds.partition_file)
    ds.roots = [str(absolute(r)) for r in ds.roots]
    cache_dir = resolve_cache(ds, Path(absolute(str(data_dir)) or data_dir), progress=progress)
    cache = open_cache(cache_dir)
    rows = select_rows(cache.index, split, ds.split, ds.partition_file, ds.test_fraction, ds.split_seed)
    if len(rows) == 0:
        raise CommandError(f"split={split!r} of dataset {ds.name!r} selects no sequences")
    return SequenceSelection(cache, Path(cache_dir), rows, ds, split)


def default_dataset_node(conf_dir: str | os.PathLike) -> dict[str, Any]:
    """The shipped ``dataset/synthetic`` option, for checkpoints that do not name their dataset."""
    from omegaconf import OmegaConf

    path = Path(conf_dir) / "dataset" / "synthetic.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ MLflow


def log_evaluation(tracker: Any, params: Mapping[str, Any], metrics: Mapping[str, float],
                   tables: Mapping[str, Any], files: Mapping[str, Sequence[Path]]) -> None:
    """Record an evaluation with a platform tracker (``MLflowTracker`` / ``NullTracker``): params,
    ``test/...`` metrics, and each table as CSV + Markdown artifacts and an MLflow table."""
    tracker.log_params(dict(params))
    tracker.log_metrics({(k if k.startswith("test/") else f"test/{k}"): float(v) for k, v in metrics.items()
                         if v is not None and np.isfinite(float(v))})
    for name, table in tables.items():
        if name in files:
            tracker.log_table(table, str(name).replace("/", "_"), files=tuple(files[name]))
