"""``python -m lstc_gait.train [overrides]``: compose the config, build everything, train, evaluate, track.

The Hydra entry point is thin: :func:`main` reads the Hydra job (run dir, overrides, sweep parent)
and calls :func:`run`, which takes the composed config and explicit arguments; tests call
:func:`run` directly. ``trainer=ddp trainer.devices=N`` spawns N processes here (or runs under
torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lstc_gait.config_schema import check_choices, register_configs
from lstc_gait.engine import checkpoint as ckpt_io
from lstc_gait.engine import distributed as dist_utils
from lstc_gait.engine.distributed import DistInfo
from lstc_gait.engine.ema import ModelEMA
from lstc_gait.engine.optim import param_groups
from lstc_gait.engine.runtime import (
    amp_dtype,
    autocast_factory,
    keep_freed_memory,
    make_scaler,
    resolve_device,
    seed_everything,
    set_deterministic,
)
from lstc_gait.engine.trainer import FitResult, Trainer, TrainSettings

log = logging.getLogger("lstc_gait.train")

register_configs()

# Overrides that only say where things go: left out of the run name (they stay in the tags).
_NAME_EXCLUDE = ("hydra.", "tracking.", "paths.", "resume", "trainer.progress")


@dataclass
class JobInfo:
    """What the Hydra job knows and the library does not: run name, overrides, group choices, parent run."""

    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None

    @property
    def run_name(self) -> str:
        kept = [o for o in self.overrides if not o.lstrip("+~").startswith(_NAME_EXCLUDE)]
        return ",".join(kept) if kept else "default"


def branches_in_words(model_cfg: Any) -> str:
    if str(model_cfg.get("arch", "lstc")) != "lstc":  # GaitSet has no LSTC branches
        return str(model_cfg.get("arch"))
    on = [n for n in ("temporal", "spatial", "joint") if bool(model_cfg.get(f"use_{n}", True))]
    return "+".join(on) if on else "none"


def _abs(path: str | None) -> str | None:
    return None if path in (None, "") else str(Path(path).expanduser().absolute())


def dataset_settings(cfg: DictConfig) -> Any:
    """The typed, validated dataset config with relative paths made absolute and, for synthetic data,
    ``trainer.shrink_synthetic`` applied."""
    from lstc_gait.data.config import dataset_config_from

    node = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert isinstance(node, dict)
    shrink = OmegaConf.select(cfg, "trainer.shrink_synthetic", default=None)
    if node.get("synthetic") is not None and shrink:
        node["synthetic"] = {**node["synthetic"], **OmegaConf.to_container(shrink, resolve=True)}
    ds = dataset_config_from(node)
    ds.root = _abs(ds.root)
    ds.roots = [str(_abs(r)) for r in ds.roots]
    ds.cache_dir = _abs(ds.cache_dir)
    ds.partition_file = _abs(ds.partition_file)
    return ds


@dataclass
class DataBundle:
    cache: Any
    train_rows: np.ndarray
    train_labels: np.ndarray
    train_views: np.ndarray
    test_rows: np.ndarray
    num_classes: int
    settings: Any


def load_data(cfg: DictConfig, dist_info: DistInfo, progress: bool) -> DataBundle:
    from lstc_gait.data import open_cache, split_subjects
    from lstc_gait.data.config import resolve_cache

    ds = dataset_settings(cfg)
    data_dir = Path(_abs(cfg.paths.data_dir) or "outputs/data")
    # Rank 0 generates / prepares; the others wait, then reuse the ready cache.
    if dist_info.is_main:
        cache_dir = resolve_cache(ds, data_dir, progress=progress)
    dist_utils.barrier()
    if not dist_info.is_main:
        cache_dir = resolve_cache(ds, data_dir, progress=False)
    cache = open_cache(cache_dir)
    index = cache.index
    subjects = index["subject"].astype(str).to_numpy()
    train_subj, test_subj = split_subjects(subjects, ds.split, ds.partition_file, ds.test_fraction, ds.split_seed)
    label_of = {s: i for i, s in enumerate(train_subj)}
    train_rows = np.flatnonzero(np.isin(subjects, train_subj))
    test_rows = np.flatnonzero(np.isin(subjects, test_subj))
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise ValueError(f"dataset {ds.name!r}: the {ds.split} split left no training or no test sequences")
    labels = np.asarray([label_of[s] for s in subjects[train_rows]], dtype=np.int64)
    views = index["view"].astype(str).to_numpy()[train_rows]
    log.info("dataset %s: %d sequences, %d train subjects (%d seqs), %d test subjects (%d seqs)", ds.name,
             len(index), len(train_subj), len(train_rows), len(test_subj), len(test_rows))
    return DataBundle(cache, train_rows, labels, views, test_rows, len(train_subj), ds)


class ProtocolEvaluator:
    """Embeds the test sequences (sharded across ranks, all-gathered), runs the dataset's protocol,
    prints/writes the tables and logs tables and ``test/...`` metrics (rank 0 only)."""

    def __init__(self, data: DataBundle, metric: str, batch_size: int, num_workers: int, device: torch.device,
                 amp: torch.dtype | None, dist_info: DistInfo, out_dir: Path, tracker: Any, progress: bool,
                 weights: str) -> None:
        from lstc_gait.data import TestSequenceDataset

        self.data = data
        index = data.cache.index
        rows = data.test_rows
        self.subjects = index["subject"].astype(str).to_numpy()[rows]
        self.types = index["type"].astype(str).to_numpy()[rows]
        self.views = index["view"].astype(str).to_numpy()[rows]
        self.shard = np.arange(len(rows))[dist_info.rank::dist_info.world_size]
        self.dataset = TestSequenceDataset(data.cache, rows[self.shard], width=data.settings.width,
                                           max_frames=data.settings.test_max_frames)
        self.protocol = data.settings.evaluation
        self.metric = metric
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.amp = amp
        self.dist = dist_info
        self.out_dir = out_dir
        self.tracker = tracker
        self.progress = progress
        self.weights = weights
        self.tables: dict[str, Any] = {}

    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        from lstc_gait.evaluation import extract_embeddings, format_table, protocol_metrics, write_table

        t0 = time.perf_counter()
        emb = extract_embeddings(model, self.dataset, batch_size=self.batch_size, device=self.device,
                                 amp=self.amp if self.amp is not None else False, num_workers=self.num_workers,
                                 progress=self.progress and self.dist.is_main)
        if self.dist.enabled:
            parts = dist_utils.all_gather_object((self.shard, emb))
            full = np.zeros((len(self.subjects), *emb.shape[1:]), dtype=np.float32)
            for idx, e in parts:
                full[idx] = e
            emb = full
        if not self.dist.is_main:
            return {}
        tables, metrics = protocol_metrics(self.protocol, emb, self.subjects, self.types, self.views, self.metric)
        from lstc_gait.evaluation.baselines import same_view_table

        same = same_view_table(tables)
        if same is not None:
            metrics.update({f"{k}/same_view_rank1": float(v) for k, v in same["mean"].items()})
        header = {"protocol": self.protocol, "distance": self.metric,
                  "checkpoint": f"{self.weights} weights at step {step}",
                  "split": f"{self.data.settings.split} ({len(set(self.subjects))} test subjects)",
                  "misses_counted": True}
        step_dir = self.out_dir / "tables" / f"step_{step:07d}"
        for name, df in tables.items():
            csv, md = write_table(df, step_dir / name, header)
            latest = write_table(df, self.out_dir / "tables" / name, header)
            self.tracker.log_table(df, name, files=latest)
            del csv, md
        shown = [n for n in ("rank1", "rank1_excl_missing") if n in tables] or list(tables)[:1]
        for name in shown:
            print(f"\n{self.protocol} {name} (%), {self.weights} weights, step {step}:\n"
                  f"{format_table(tables[name])}\n", flush=True)
        self.tracker.log_metrics({f"test/{k}": float(v) for k, v in metrics.items()}, step=step)
        self.tables = tables
        log.info("evaluation at step %d took %.1fs: %s", step, time.perf_counter() - t0,
                 ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k.endswith("rank1") or k == "mAP"))
        return metrics


def build_tracker(cfg: DictConfig, job: JobInfo, run_dir: Path, run_id: str | None) -> Any:
    tags = {
        "lstc_gait.overrides": " ".join(job.overrides),
        "lstc_gait.run_dir": str(run_dir.absolute()),
        "branches": branches_in_words(cfg.model),
        **{f"choice.{k}": v for k, v in job.choices.items()},
    }
    return hydra.utils.instantiate(cfg.tracking, run_name=job.run_name, parent_run_id=job.parent_run_id,
                                   run_id=run_id, tags=tags, output_dir=_abs(cfg.paths.output_dir))


def run(cfg: DictConfig, run_dir: str | os.PathLike, job: JobInfo | None = None, dist_info: DistInfo | None = None,
        step_hook: Callable[[int], None] | None = None) -> FitResult:
    """Train, evaluate and track one job described by the composed config ``cfg``; files go to ``run_dir``."""
    job = job or JobInfo()
    dist_info = dist_info or DistInfo()
    run_dir = Path(run_dir).absolute()
    check_choices(cfg)
    t_start = time.perf_counter()
    tr = cfg.trainer
    device = resolve_device(tr.device, dist_info.local_rank)
    if device.type == "cpu":
        keep_freed_memory()
        if dist_info.enabled:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist_info.world_size))
    seed_everything(int(cfg.seed))
    set_deterministic(bool(tr.deterministic))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)

    resume_path = ckpt_io.resolve_resume(cfg.resume, run_dir)
    resume_state = ckpt_io.load_checkpoint(resume_path) if resume_path is not None else None
    if resume_state is not None:  # fail before any expensive work when the model config differs
        ckpt_io.check_compatible(resume_state.get("config") or {}, resolved, resume_path)

    tracker = None
    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tracker = build_tracker(cfg, job, run_dir, resume_state.get("mlflow_run_id") if resume_state else None)
    else:
        from lstc_gait.tracking import NullTracker

        tracker = NullTracker()
    status = "FAILED"
    try:
        tracker.log_params(resolved)
        config_path = run_dir / "config_resolved.yaml"
        if dist_info.is_main:
            tmp = config_path.with_suffix(".tmp")
            tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), encoding="utf-8")
            os.replace(tmp, config_path)
            tracker.log_artifact(config_path, "config")
        progress = bool(tr.progress) and dist_info.is_main
        data = load_data(cfg, dist_info, progress)
        result = _train(cfg, resolved, data, run_dir, dist_info, device, tracker, resume_state, resume_path,
                        step_hook, progress)
        if dist_info.is_main:
            for _, path in sorted(result.checkpoints.items()):
                tracker.log_artifact(path, "checkpoints")
            tracker.log_metrics({"time/total_s": time.perf_counter() - t_start,
                                 "time/train_s": result.seconds,
                                 "train/seq_per_s_avg": result.sequences_per_second}, step=result.step)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


def _train(cfg: DictConfig, resolved: dict, data: DataBundle, run_dir: Path, dist_info: DistInfo,
           device: torch.device, tracker: Any, resume_state: dict | None, resume_path: Path | None,
           step_hook: Callable[[int], None] | None, progress: bool) -> FitResult:
    from torch.utils.data import DataLoader

    from lstc_gait.data import TrainSequenceDataset

    tr = cfg.trainer
    ds = data.settings
    train_set = TrainSequenceDataset(data.cache, data.train_rows, data.train_labels, num_frames=ds.num_frames,
                                     sampling=ds.sampling, width=ds.width,
                                     augment=dataclasses.asdict(ds.augment))
    sampler = hydra.utils.instantiate(cfg.sampler, labels=data.train_labels, views=data.train_views,
                                      seed=int(cfg.seed), rank=dist_info.rank, world_size=dist_info.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=int(tr.num_workers),
                        pin_memory=device.type == "cuda", persistent_workers=False)

    kernels = tuple(tuple(int(v) for v in k) for k in cfg.model.kernels)
    model = hydra.utils.instantiate(cfg.model, num_classes=data.num_classes, kernels=kernels, _convert_="all")
    if cfg.init_from:
        from lstc_gait.compat import load_reference_weights

        load_reference_weights(model, _abs(cfg.init_from))
        log.info("warm start from %s", cfg.init_from)
    if dist_info.enabled and tr.sync_bn:
        model = dist_utils.convert_sync_batchnorm(model, device)
    model.to(device)
    ema = ModelEMA(model, tr.ema.decay, tr.ema.warmup) if tr.ema.enabled else None
    train_model: torch.nn.Module = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # A loss without the CE term leaves the classifier unused: DDP must then look for unused parameters.
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=float(cfg.loss.ce_weight) == 0.0)

    loss_fn = hydra.utils.instantiate(cfg.loss)
    optimizer = hydra.utils.instantiate(tr.optimizer, _convert_="all")(param_groups(model, tr.optimizer.weight_decay))
    max_steps = int(tr.max_steps) if tr.max_steps > 0 else int(tr.max_epochs) * sampler.num_batches(0)
    max_minutes = float(OmegaConf.select(tr, "max_minutes", default=0.0) or 0.0)
    # with max_minutes the trainer re-plans the schedule's length once it has measured a step
    scheduler = hydra.utils.instantiate(tr.scheduler)(optimizer, total_steps=max(1, max_steps or 10 ** 6))
    dtype = amp_dtype(bool(tr.amp), tr.amp_dtype, device)

    weights = "EMA" if ema is not None else "model"
    evaluator = ProtocolEvaluator(data, cfg.eval.metric, int(cfg.eval.batch_size), int(cfg.eval.num_workers),
                                  device, dtype, dist_info, run_dir, tracker, progress, weights)
    settings = TrainSettings(max_steps=max_steps, eval_every=int(tr.eval_every), log_every=max(1, int(tr.log_every)),
                             checkpoint_every=int(tr.checkpoint_every), grad_clip=float(tr.grad_clip),
                             progress=progress, monitor=cfg.eval.monitor, max_minutes=max_minutes,
                             eval_every_minutes=float(OmegaConf.select(tr, "eval_every_minutes", default=0.0) or 0.0))
    trainer = Trainer(train_model, loss_fn, optimizer, scheduler, sampler, loader, settings, device,
                      autocast_factory(device, dtype), make_scaler(device, dtype), ema=ema, dist_info=dist_info,
                      evaluator=evaluator, tracker=tracker, checkpoint_dir=run_dir / "checkpoints",
                      config=resolved, num_classes=data.num_classes, step_hook=step_hook)
    trainer.extra_state["mlflow_run_id"] = getattr(tracker, "run_id", None)
    if resume_state is not None and resume_path is not None:
        trainer.load_state_dict(resume_state, resume_path)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_path, trainer.step, trainer.epoch,
                 trainer.index)
    log.info("training %s: %s batches of %d x %d sequences x %d frames on %s%s",
             f"{max_minutes:g} minutes" + (f" (at most {max_steps} steps)" if max_steps else "") if max_minutes
             else f"{max_steps} steps",
             type(sampler).__name__, cfg.sampler.p, cfg.sampler.k, ds.num_frames, device,
             f" x {dist_info.world_size} processes" if dist_info.enabled else "")
    result = trainer.fit()
    if dist_info.is_main and result.metrics and bool(OmegaConf.select(cfg, "eval.gei_baseline", default=True)):
        from lstc_gait.evaluation.baselines import print_gei_comparison

        print_gei_comparison(data.cache, data.test_rows, ds.evaluation, ds.width, cfg.eval.metric, result.metrics,
                             tracker, result.step)
    if dist_info.is_main:
        log.info("done: step %d, %.1fs training, %.1f seq/s; test %s", result.step, result.seconds,
                 result.sequences_per_second,
                 ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items() if k.endswith("/rank1")))
    return result


# ------------------------------------------------------------------------------------------ processes


def _ddp_worker(rank: int, cfg_dict: dict, run_dir: str, job: JobInfo, world_size: int, port: int,
                backend: str) -> None:
    logging.basicConfig(level=logging.INFO, format="[rank %(process)d] %(levelname)s %(name)s: %(message)s")
    info = DistInfo(rank, world_size, rank)
    dist_utils.init_process_group(info, backend, f"tcp://127.0.0.1:{port}")
    try:
        run(OmegaConf.create(cfg_dict), run_dir, job, info)
    finally:
        dist_utils.cleanup()


def launch(cfg: DictConfig, run_dir: str | os.PathLike, job: JobInfo | None = None) -> FitResult | None:
    """Run one job: single process, spawned DDP processes (trainer=ddp), or this rank of a torchrun job."""
    job = job or JobInfo()
    tr = cfg.trainer
    if tr.strategy != "ddp":
        return run(cfg, run_dir, job)
    device = resolve_device(tr.device)
    backend = dist_utils.default_backend(device, tr.backend)
    env = dist_utils.torchrun_env()
    if env is not None:  # torchrun started this process: join its group; rank 0's run dir is everyone's
        dist_utils.init_process_group(env, backend)
        try:
            run_dir = dist_utils.broadcast_object(str(Path(run_dir).absolute()))
            return run(cfg, run_dir, job, env)
        finally:
            dist_utils.cleanup()
    world = int(tr.devices)
    if world == 1:
        return run(cfg, run_dir, job)
    if device.type == "cuda" and torch.cuda.device_count() < world:
        raise ValueError(f"trainer.devices={world} but only {torch.cuda.device_count()} GPUs are visible")
    p, k = int(cfg.sampler.p), int(cfg.sampler.k)
    if (p * k) % world:
        raise ValueError(f"the global batch sampler.p x sampler.k = {p} x {k} = {p * k} is not divisible by "
                         f"trainer.devices={world}")
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    port = dist_utils.free_port()
    log.info("spawning %d %s processes (127.0.0.1:%d)", world, backend, port)
    dist_utils.spawn(_ddp_worker, world, (cfg_dict, str(Path(run_dir).absolute()), job, world, port, backend))
    return None


def job_info_from_hydra() -> JobInfo:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides = [str(o) for o in hc.overrides.task]
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    parent = None
    if hc.mode == RunMode.MULTIRUN:
        from lstc_gait.tracking.sweep import parent_run_id

        parent = parent_run_id(hc.sweep.dir)
    return JobInfo(overrides=overrides, choices=choices, parent_run_id=parent)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    result = launch(cfg, run_dir, job_info_from_hydra())
    if result is None or not result.metrics:
        return None
    from lstc_gait.engine.trainer import monitor_value

    return monitor_value(result.metrics, cfg.eval.monitor)  # the sweep objective (e.g. for Optuna)


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM (kill, SLURM preemption) unwinds like Ctrl-C: the MLflow run is closed as KILLED.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry (``lstc-gait-train``) and ``python -m lstc_gait.train``."""
    import signal

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    signal.signal(signal.SIGTERM, _terminate)
    _hydra_main()


if __name__ == "__main__":
    main()
