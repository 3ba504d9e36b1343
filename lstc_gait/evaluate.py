"""``python -m lstc_gait.evaluate``: a test protocol on a checkpoint or on an embeddings ``.npz``.

- ``checkpoint=PATH [dataset=...] [protocol=...]``: the platform's checkpoints (EMA weights when
  present) or an original lstc-gait checkpoint; any dataset option and protocol.
- ``embeddings=FILE.npz protocol=casia_b|ou_mvlp|retrieval``: embeddings computed anywhere.

Writes the per-view tables (CSV + Markdown, each headed by protocol, distance, checkpoint, split and
the misses policy), prints them, and logs them to MLflow with ``tracking=mlflow``.
Library logic: :mod:`lstc_gait.evaluation.commands`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lstc_gait.evaluate")
CONF_DIR = Path(__file__).parent / "conf"


def _abs(path: str | None, base: Path) -> Path | None:
    if not path:
        return None
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else base / p


def run_evaluate(cfg: DictConfig, base_dir: Path) -> dict[str, Any]:
    """Evaluate as ``cfg`` says; returns {"protocol", "metrics", "tables", "files", "out_dir", "run_id"}."""
    from lstc_gait.evaluation import commands as C

    if bool(cfg.checkpoint) == bool(cfg.embeddings):
        raise C.CommandError("give exactly one of checkpoint=PATH or embeddings=FILE.npz")
    if cfg.embeddings:
        path = _abs(cfg.embeddings, base_dir)
        es = C.load_embeddings(path)
        protocol = cfg.protocol or es.meta.get("protocol") or "casia_b"
        source, split = str(es.meta.get("checkpoint") or path), str(es.meta.get("split") or "as stored")
        emb, subjects, types, views = es.embeddings, es.subjects, es.types, es.views
        name = path.stem
        params: dict[str, Any] = {"embeddings": str(path), "source_checkpoint": es.meta.get("checkpoint", "")}
    else:
        path = _abs(cfg.checkpoint, base_dir)
        loaded = C.load_model(path, use_ema=bool(cfg.use_ema))
        node = (OmegaConf.to_container(cfg.dataset, resolve=True) if cfg.get("dataset") is not None
                else C.effective_dataset_node(loaded.config) or C.default_dataset_node(CONF_DIR))
        data_dir = _abs(str(cfg.paths.data_dir), base_dir)
        sel = C.select_sequences(node, data_dir, cfg.split, base_dir=base_dir, progress=bool(cfg.progress))
        protocol = cfg.protocol or sel.dataset.evaluation
        labels = sel.labels()
        log.info("embedding %d sequences of %s (%s split) with %s weights", len(sel.rows), sel.dataset.name,
                 cfg.split, loaded.weights)
        emb = C.embed_rows(loaded.model, sel.cache, sel.rows, width=sel.dataset.width,
                           max_frames=cfg.max_frames, batch_size=int(cfg.batch_size), device=str(cfg.device),
                           amp=bool(cfg.amp), num_workers=int(cfg.num_workers), progress=bool(cfg.progress))
        subjects, types, views = labels["subjects"], labels["types"], labels["views"]
        source, split = f"{path} ({loaded.kind}, {loaded.weights} weights)", f"{sel.dataset.name}:{cfg.split}"
        name = path.stem
        params = {"checkpoint": str(path), "checkpoint_kind": loaded.kind, "weights": loaded.weights,
                  "dataset": sel.dataset.name, "cache_dir": str(sel.cache_dir), "max_frames": cfg.max_frames}

    tables, metrics = C.run_protocol(protocol, emb, subjects, types, views, metric=str(cfg.metric))
    header = C.table_header(protocol, str(cfg.metric), source, split)
    out_dir = _abs(cfg.out_dir, base_dir) or base_dir / "outputs" / "eval" / f"{name}-{protocol}-{cfg.split}"
    files = C.write_tables(tables, out_dir, header)
    _print_tables(tables, header)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"tables written to {out_dir}")

    run_id = None
    if cfg.tracking.get("enabled", False):
        import hydra.utils

        params.update({"protocol": protocol, "metric": cfg.metric, "split": split, "n_sequences": len(subjects)})
        tracker = hydra.utils.instantiate(cfg.tracking, run_name=f"evaluate {name} {protocol}",
                                          tags={"lstc_gait.kind": "evaluation"},
                                          output_dir=str(_abs(str(cfg.paths.output_dir), base_dir)))
        status = "FAILED"
        try:
            C.log_evaluation(tracker, params, metrics, tables, files)
            status = "FINISHED"
        finally:
            tracker.end(status)
        run_id = tracker.run_id
        print(f"logged to MLflow run {run_id} ({tracker.uri})")
    return {"protocol": protocol, "metrics": metrics, "tables": tables, "files": files, "out_dir": out_dir,
            "run_id": run_id}


def _print_tables(tables: dict[str, Any], header: dict[str, str]) -> None:
    import pandas as pd

    from lstc_gait.evaluation import commands as C
    from lstc_gait.evaluation.tables import format_table

    print(" | ".join(f"{k}: {v}" for k, v in header.items()))
    for name, table in tables.items():
        if isinstance(table, pd.DataFrame) and not str(name).startswith("crossview"):
            print(f"\n{name} (misses counted: {C.misses_policy(header['protocol'], str(name))})")
            print(format_table(table))
    if any(str(n).startswith("crossview") for n in tables):
        print("\n(probe x gallery view matrices: crossview_* files)")


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lstc_gait.evaluation.commands import run_command

    run_command("evaluate", lambda: run_evaluate(cfg, Path.cwd()))


if __name__ == "__main__":
    main()
