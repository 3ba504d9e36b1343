"""``python -m lstc_gait.extract checkpoint=PATH [dataset=...] [split=test] out=FILE.npz``

Embeds the split's sequences and writes embeddings, subjects, types, views, seqs and a JSON ``meta``
(checkpoint, weights, dataset, split, protocol) to one ``.npz`` that ``python -m lstc_gait.evaluate
embeddings=FILE.npz`` or any other tool reads. Library logic: :mod:`lstc_gait.evaluation.commands`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lstc_gait.extract")
CONF_DIR = Path(__file__).parent / "conf"


def run_extract(cfg: DictConfig, base_dir: Path) -> Path:
    """Write the embeddings npz as ``cfg`` says; returns its path."""
    from lstc_gait.evaluation import commands as C

    ckpt = Path(str(cfg.checkpoint)).expanduser()
    ckpt = ckpt if ckpt.is_absolute() else base_dir / ckpt
    loaded = C.load_model(ckpt, use_ema=bool(cfg.use_ema))
    node = (OmegaConf.to_container(cfg.dataset, resolve=True) if cfg.get("dataset") is not None
            else C.effective_dataset_node(loaded.config) or C.default_dataset_node(CONF_DIR))
    data_dir = Path(str(cfg.paths.data_dir))
    sel = C.select_sequences(node, data_dir if data_dir.is_absolute() else base_dir / data_dir, cfg.split,
                             base_dir=base_dir, progress=bool(cfg.progress))
    emb = C.embed_rows(loaded.model, sel.cache, sel.rows, width=sel.dataset.width, max_frames=cfg.max_frames,
                       batch_size=int(cfg.batch_size), device=str(cfg.device), amp=bool(cfg.amp),
                       num_workers=int(cfg.num_workers), progress=bool(cfg.progress))
    labels = sel.labels()
    out = Path(str(cfg.out)) if cfg.out else Path("outputs") / "embeddings" / f"{ckpt.stem}-{sel.dataset.name}-{cfg.split}.npz"
    out = out if out.is_absolute() else base_dir / out
    meta = {"checkpoint": str(ckpt), "checkpoint_kind": loaded.kind, "weights": loaded.weights,
            "dataset": sel.dataset.name, "cache_dir": str(sel.cache_dir), "split": f"{sel.dataset.name}:{cfg.split}",
            "protocol": sel.dataset.evaluation, "max_frames": cfg.max_frames, "embedding_dim": int(emb.shape[1])}
    C.save_embeddings(out, emb, labels["subjects"], labels["types"], labels["views"], meta=meta, seqs=labels["seqs"])
    print(f"wrote {out}: {emb.shape[0]} embeddings of dim {emb.shape[1]} ({sel.dataset.name}, {cfg.split} split)")
    return out


@hydra.main(config_path="conf", config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lstc_gait.evaluation.commands import run_command

    run_command("extract", lambda: run_extract(cfg, Path.cwd()))


if __name__ == "__main__":
    main()
