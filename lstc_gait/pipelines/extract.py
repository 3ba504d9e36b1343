"""Extraction job: embed a dataset split with a checkpoint and write an embeddings ``.npz``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lstc_gait.utils.paths import resolve_path


def extract(cfg: DictConfig, base_dir: Path) -> Path:
    """Write the embeddings file the ``extract`` config describes.

    The file holds embeddings float32 (N, D), subjects, types, views, seqs and a JSON ``meta``
    (checkpoint, weights, dataset, split, protocol) that ``evaluate embeddings=FILE`` reads.

    Args:
        cfg: The composed ``conf/extract.yaml``.
        base_dir: The launch folder (relative paths start here).

    Returns:
        The written file.

    Raises:
        UserError: An unusable checkpoint, dataset or split.
    """
    from lstc_gait.engine.checkpoint import load_model
    from lstc_gait.engine.device import resolve_device
    from lstc_gait.evaluation.embeddings_io import save_embeddings
    from lstc_gait.evaluation.evaluator import Evaluator, TestRows
    from lstc_gait.pipelines.evaluate import checkpoint_rows

    ckpt = resolve_path(cfg.checkpoint, base_dir)
    loaded = load_model(ckpt, use_ema=bool(cfg.use_ema))
    sel = checkpoint_rows(cfg, loaded, base_dir)
    split = f"{sel.dataset.name}:{cfg.split}"
    evaluator = Evaluator(sel.dataset.evaluation, "euclidean", TestRows(sel.cache, sel.rows, sel.dataset.width,
                                                                        cfg.max_frames, split),
                          batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
                          device=resolve_device(str(cfg.device)), amp=bool(cfg.amp), progress=bool(cfg.progress))
    emb = evaluator.embed(loaded.model)
    labels = sel.labels()
    default = Path("outputs") / "embeddings" / f"{ckpt.stem}-{sel.dataset.name}-{cfg.split}.npz"
    out = resolve_path(cfg.out or default, base_dir)
    meta = {"checkpoint": str(ckpt), "checkpoint_kind": loaded.kind, "weights": loaded.weights,
            "dataset": sel.dataset.name, "cache_dir": str(sel.cache_dir), "split": split,
            "protocol": sel.dataset.evaluation, "max_frames": cfg.max_frames, "embedding_dim": int(emb.shape[1])}
    save_embeddings(out, emb, labels["subjects"], labels["types"], labels["views"], meta=meta, seqs=labels["seqs"])
    print(f"wrote {out}: {emb.shape[0]} embeddings of dim {emb.shape[1]} ({sel.dataset.name}, {cfg.split} split)")
    return out


__all__ = ["extract"]
