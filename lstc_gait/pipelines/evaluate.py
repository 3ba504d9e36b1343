"""Evaluation job: a protocol on a checkpoint (embedding a dataset split) or on an embeddings file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lstc_gait.errors import UserError
from lstc_gait.utils.paths import resolve_path

log = logging.getLogger("lstc_gait.evaluate")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def checkpoint_rows(cfg: DictConfig, loaded: Any, base_dir: Path) -> Any:
    """The split of the dataset a checkpoint command embeds, its cache made ready.

    Uses ``cfg.dataset`` when given, else the dataset the checkpoint was trained on (as its run built
    it), else the shipped synthetic dataset.

    Args:
        cfg: The command's config (``dataset``, ``split``, ``paths.data_dir``, ``progress``).
        loaded: The :class:`lstc_gait.engine.checkpoint.LoadedModel`.
        base_dir: The launch folder.

    Returns:
        A :class:`lstc_gait.data.selection.SequenceSelection`.

    Raises:
        SelectionError: The split selects nothing.
    """
    from lstc_gait.data.selection import default_dataset_node, effective_dataset_node, select_sequences

    node = (OmegaConf.to_container(cfg.dataset, resolve=True) if cfg.get("dataset") is not None
            else effective_dataset_node(loaded.config) or default_dataset_node(CONF_DIR))
    return select_sequences(node, resolve_path(str(cfg.paths.data_dir), base_dir), cfg.split,
                            base_dir=base_dir, progress=bool(cfg.progress))


def evaluate(cfg: DictConfig, base_dir: Path) -> dict[str, Any]:
    """Evaluate as the ``evaluate`` config says: ``checkpoint=PATH`` or ``embeddings=FILE.npz``.

    Args:
        cfg: The composed ``conf/evaluate.yaml``.
        base_dir: The launch folder (relative paths start here).

    Returns:
        ``{"protocol", "metrics", "tables", "files", "out_dir", "run_id"}``.

    Raises:
        UserError: Not exactly one of checkpoint/embeddings, or an unusable file, protocol or split.
    """
    import hydra.utils

    from lstc_gait.engine.checkpoint import load_model
    from lstc_gait.engine.device import resolve_device
    from lstc_gait.evaluation.embeddings_io import load_embeddings
    from lstc_gait.evaluation.evaluator import Evaluator, TestRows

    if bool(cfg.checkpoint) == bool(cfg.embeddings):
        raise UserError("give exactly one of checkpoint=PATH or embeddings=FILE.npz")
    if cfg.embeddings:
        path = resolve_path(cfg.embeddings, base_dir)
        es = load_embeddings(path)
        protocol = cfg.protocol or es.meta.get("protocol") or "casia_b"
        source, split = str(es.meta.get("checkpoint") or path), str(es.meta.get("split") or "as stored")
        params: dict[str, Any] = {"embeddings": str(path), "source_checkpoint": es.meta.get("checkpoint", "")}
        evaluator = Evaluator(protocol, str(cfg.metric), same_view=cfg.get("exclude_same_view", "auto"))
        labelled = (es.embeddings, es.subjects, es.types, es.views)
        evaluator.check({"subjects": es.subjects, "types": es.types, "views": es.views})
    else:
        path = resolve_path(cfg.checkpoint, base_dir)
        loaded = load_model(path, use_ema=bool(cfg.use_ema))
        sel = checkpoint_rows(cfg, loaded, base_dir)
        protocol = cfg.protocol or sel.dataset.evaluation
        split = f"{sel.dataset.name}:{cfg.split}"
        source = f"{path} ({loaded.kind}, {loaded.weights} weights)"
        params = {"checkpoint": str(path), "checkpoint_kind": loaded.kind, "weights": loaded.weights,
                  "dataset": sel.dataset.name, "cache_dir": str(sel.cache_dir), "max_frames": cfg.max_frames}
        evaluator = Evaluator(protocol, str(cfg.metric), TestRows(sel.cache, sel.rows, sel.dataset.width,
                                                                  cfg.max_frames, split),
                              batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
                              device=resolve_device(str(cfg.device)), amp=bool(cfg.amp), progress=bool(cfg.progress),
                              same_view=cfg.get("exclude_same_view", "auto"))
        labels = sel.labels()
        evaluator.check(labels)  # a missing probe or gallery set is named before anything is embedded
        log.info("embedding %d sequences of %s (%s split) with %s weights", len(sel.rows), sel.dataset.name,
                 cfg.split, loaded.weights)
        labelled = (evaluator.embed(loaded.model), labels["subjects"], labels["types"], labels["views"])
    out_dir = resolve_path(cfg.out_dir, base_dir) or base_dir / "outputs" / "eval" / f"{path.stem}-{protocol}-{cfg.split}"

    if cfg.tracking.get("enabled", False):
        evaluator.tracker = hydra.utils.instantiate(
            cfg.tracking, run_name=f"evaluate {path.stem} {protocol}", tags={"lstc_gait.kind": "evaluation"},
            output_dir=str(resolve_path(str(cfg.paths.output_dir), base_dir)))
    tracker, status = evaluator.tracker, "FAILED"
    try:
        if tracker is not None:
            tracker.log_params({**params, "protocol": protocol, "metric": cfg.metric, "split": split,
                                "n_sequences": len(labelled[1])})
        result = evaluator.evaluate_embeddings(*labelled, checkpoint=source, split=split, out_dirs=[out_dir])
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.end(status)
    for key, value in result.metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"tables written to {out_dir}")
    run_id = getattr(tracker, "run_id", None)
    if run_id:
        print(f"logged to MLflow run {run_id} ({tracker.uri})")
    return {"protocol": protocol, "metrics": result.metrics, "tables": result.tables, "files": result.files,
            "out_dir": out_dir, "run_id": run_id}


__all__ = ["checkpoint_rows", "evaluate"]
