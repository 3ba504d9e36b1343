"""Training job: compose -> validate -> data -> model -> trainer -> evaluation -> tracking.

:func:`launch` runs one job (single process, spawned DDP processes for ``trainer=ddp``, or this rank
of a torchrun job); :func:`run` trains one process's share. Process-wide settings (threads,
deterministic kernels, allocator) are applied by the callers that own the process
(:func:`lstc_gait.engine.runtime.configure_process`), never here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lstc_gait.engine import checkpoint as ckpt_io
from lstc_gait.engine import distributed as dist_utils
from lstc_gait.engine.device import resolve_device
from lstc_gait.engine.distributed import DistInfo
from lstc_gait.engine.runtime import (
    amp_dtype,
    autocast_factory,
    configure_process,
    make_scaler,
    seed_everything,
)
from lstc_gait.engine.trainer import FitResult, Trainer, TrainSettings
from lstc_gait.errors import UserError
from lstc_gait.utils.fileio import atomic_write_text
from lstc_gait.utils.paths import resolve_path

log = logging.getLogger("lstc_gait.train")


RESUME_CHANGED_TAG = "resume.changed"  # MLflow tag of a resumed run: "key: old -> new, ..."


class RunConfigError(UserError, ValueError):
    """A training config that cannot run (checked before anything expensive starts)."""


@dataclass
class JobInfo:
    """What the Hydra job knows and the library does not.

    Attributes:
        overrides: The job's command-line overrides (``key=value`` strings, as Hydra gives them).
        choices: Config group -> chosen option (``model`` -> ``dynamic``).
        parent_run_id: The MLflow sweep parent of a multirun job, else None.
        swept: The override keys the job's sweep varies (None: not a sweep job).
        in_tracked_sweep: The job belongs to a multirun whose callback opens a parent run, so a
            missing parent is an error.
    """

    overrides: list[str] = field(default_factory=list)
    choices: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    swept: list[str] | None = None
    in_tracked_sweep: bool = False

    @property
    def run_name(self) -> str:
        """The MLflow run name (:func:`lstc_gait.tracking.names.job_run_name`).

        A sweep job: its swept settings only (``branches=spatial+joint``); a single run: its
        overrides except paths and tracking settings (``default`` if none).
        """
        from lstc_gait.tracking.names import job_run_name

        return job_run_name(self.override_dict(), self.swept)

    def override_dict(self) -> dict[str, str]:
        """The overrides as a dict (Hydra's ``+``/``++``/``~`` prefixes dropped).

        Returns:
            Override key -> value text, in command-line order.
        """
        out: dict[str, str] = {}
        for item in self.overrides:
            key, _, value = item.partition("=")
            out[key.strip().lstrip("+~")] = value.strip()
        return out


def validate_run_config(cfg: DictConfig, world_size: int | None = None) -> None:
    """Check a composed training config before any data, model or tracking work starts.

    The one place run settings are validated. Besides the fixed choices and sizes it refuses settings
    that would run but silently do nothing:

    - a triplet-based loss (``loss.triplet_weight > 0``) with ``sampler.k < 2`` or with a sampler whose
      batches are not made of identities (``sampler=random``): no positive pair, the triplet term is 0;
    - more stripes (``model.num_stripes``) than feature rows (:func:`stripe_rows_problem`);
    - hard temporal pooling with ``pooling.topk < 1`` or larger than the training clip;
    - a DDP global batch (``sampler.p x sampler.k``) not divisible by the number of processes.

    Checks that need the data (``sampler.p`` against the training subjects, the evaluation protocol's
    sets) are in :func:`check_training_data`.

    Args:
        cfg: The composed training config.
        world_size: Processes sharing each batch (None: from ``trainer.strategy`` / ``trainer.devices``,
            or the torchrun environment).

    Raises:
        RunConfigError: One line naming the first bad key.
        DatasetConfigError: The dataset node is invalid (naming the key).
    """
    from lstc_gait.config_schema import check_choices
    from lstc_gait.data.selection import dataset_settings, effective_dataset_node
    from lstc_gait.evaluation.protocols import ProtocolError, same_view_setting

    try:
        check_choices(cfg)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    ds = dataset_settings(effective_dataset_node(resolved) or {})
    try:
        same_view_setting(OmegaConf.select(cfg, "eval.exclude_same_view", default="auto"), "eval.exclude_same_view")
    except ProtocolError as exc:
        raise RunConfigError(str(exc)) from exc
    for problem in (_triplet_problem(cfg), stripe_rows_problem(cfg), _pooling_problem(cfg, ds),
                    _ddp_problem(cfg, world_size)):
        if problem:
            raise RunConfigError(problem)


def _sampler_class(cfg: DictConfig) -> type | None:
    import hydra.utils

    target = OmegaConf.select(cfg, "sampler._target_", default=None)
    try:
        return hydra.utils.get_class(str(target)) if target else None
    except Exception as exc:  # Hydra wraps import errors in its own types
        raise RunConfigError(f"sampler._target_={target!r} cannot be imported: {exc}") from exc


def _triplet_problem(cfg: DictConfig) -> str | None:
    weight = float(OmegaConf.select(cfg, "loss.triplet_weight", default=0.0) or 0.0)
    if weight <= 0:
        return None
    k = int(cfg.sampler.k)
    if k < 2:
        return (f"sampler.k={k}: the triplet loss (loss.triplet_weight={weight:g}) needs k >= 2 sequences of each "
                "subject in a batch, else it has no positive pair and is 0 at every step; set sampler.k=2 or more, "
                "or use loss=ce")
    cls = _sampler_class(cfg)
    if cls is not None and getattr(cls, "identity_batches", True) is False:
        return (f"sampler={cls.__name__}: the triplet loss (loss.triplet_weight={weight:g}) needs batches of p "
                "subjects x k sequences (sampler=pk or sampler=multiview_pk); random batches do not guarantee a "
                "positive pair, so the triplet term would often be 0; use a P x K sampler or loss=ce")
    return None


def stripe_rows_problem(cfg: DictConfig, input_height: int | None = None) -> str | None:
    """Whether ``model.num_stripes`` exceeds the feature rows the model variant cuts into stripes.

    The variant says how many rows its feature map has for the input height
    (:func:`lstc_gait.models.registry.stripe_rows`; LSTC: two 2x poolings, 64 -> 16 rows), so a new
    variant registers its own rule and this check covers it.

    Args:
        cfg: The composed training config.
        input_height: Height of the training silhouettes (None: the cache's frame height, 64).

    Returns:
        The one-line problem naming ``model.num_stripes``, or None.
    """
    from lstc_gait.data.cache import FRAME_SHAPE
    from lstc_gait.models.registry import stripe_rows

    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    variant = str(model.pop("variant", None) or "lstc")
    model.pop("_target_", None)
    stripes = model.get("num_stripes")
    if stripes is None:
        return None
    height = int(input_height or FRAME_SHAPE[0])
    try:
        rows = stripe_rows(variant, height, model)
    except ValueError as exc:
        return str(exc)
    if rows is not None and int(stripes) > rows:
        return (f"model.num_stripes={stripes} is more than the {rows} feature rows that the {variant} model cuts "
                f"into stripes for {height}-pixel-high silhouettes; every stripe needs a row: use "
                f"model.num_stripes<={rows}")
    return None


def _pooling_problem(cfg: DictConfig, ds: Any) -> str | None:
    mode = OmegaConf.select(cfg, "model.pooling", default=None)
    if mode != "hard":
        return None
    key = "model.topk" if not OmegaConf.is_interpolation(cfg.model, "topk") else "pooling.topk"
    topk = int(cfg.model.topk)
    if topk < 1:
        return (f"{key}={topk}: hard temporal pooling averages the top-k frames of each stripe, so k must be >= 1")
    if topk > int(ds.num_frames):
        return (f"{key}={topk} is larger than the training clip (dataset.num_frames={ds.num_frames}): hard pooling "
                "would average every frame, i.e. silently become mean pooling; lower it or raise "
                "dataset.num_frames (or use pooling=mean)")
    return None


def _ddp_problem(cfg: DictConfig, world_size: int | None) -> str | None:
    if world_size is None:
        if cfg.trainer.strategy != "ddp":
            return None
        env = dist_utils.torchrun_env()
        world_size = env.world_size if env is not None else int(cfg.trainer.devices)
    p, k = int(cfg.sampler.p), int(cfg.sampler.k)
    if world_size > 1 and (p * k) % world_size:
        return (f"the global batch sampler.p x sampler.k = {p} x {k} = {p * k} is not divisible by the "
                f"{world_size} DDP processes (trainer.devices): each process must get the same share")
    return None


def check_training_data(cfg: DictConfig, data: Any, evaluator: Any) -> None:
    """Check the settings that need the data, after it is loaded and before the model is built.

    Args:
        cfg: The composed training config.
        data: The run's :class:`lstc_gait.data.selection.TrainingData`.
        evaluator: The run's :class:`lstc_gait.evaluation.evaluator.Evaluator` (with the test rows).

    Raises:
        RunConfigError: ``sampler.p`` larger than the number of training subjects (P x K samplers).
        ProtocolError: The test rows lack a gallery or probe set of the evaluation protocol, or give it
            nothing to measure (e.g. CASIA-B on one view); the message names the set.
    """
    cls = _sampler_class(cfg)
    p = int(cfg.sampler.p)
    if cls is not None and getattr(cls, "identity_batches", False) and p > data.num_classes:
        raise RunConfigError(f"sampler.p={p} subjects per batch, but the training split of dataset "
                             f"{data.settings.name!r} has only {data.num_classes}: set sampler.p<={data.num_classes}")
    evaluator.check()


def build_tracker(cfg: DictConfig, job: JobInfo, run_dir: Path, run_id: str | None) -> Any:
    """The run's tracker (``tracking=mlflow``: an MLflow run; ``tracking=none``: a NullTracker).

    The tags record the overrides twice: ``lstc_gait.overrides`` (text, for people) and
    ``lstc_gait.overrides_json`` (a JSON object key -> value, which the sweep report reads).

    Args:
        cfg: The composed config.
        job: The Hydra job's overrides, choices and parent run.
        run_dir: The run's folder.
        run_id: An MLflow run to reopen (resume), else None.

    Returns:
        The tracker.

    Raises:
        SweepTrackingError: A tracked sweep's job finds no parent run (it would land as an unrelated run).
    """
    import json

    import hydra.utils

    from lstc_gait.tracking.names import branches_in_words

    if job.in_tracked_sweep and not job.parent_run_id and bool(cfg.tracking.get("enabled", False)):
        from lstc_gait.tracking.sweep import SweepTrackingError

        raise SweepTrackingError("this sweep job finds no MLflow parent run (the sweep callback did not open "
                                 "one); refusing to record it as an unrelated run")

    tags = {
        "lstc_gait.overrides": " ".join(job.overrides),
        "lstc_gait.overrides_json": json.dumps(job.override_dict()),
        "lstc_gait.run_dir": str(run_dir.absolute()),
        "branches": (str(cfg.model.get("variant")) if cfg.model.get("variant") == "gaitset"  # no LSTC branches
                     else branches_in_words(*(bool(cfg.model.get(f"use_{n}", True))
                                              for n in ("temporal", "spatial", "joint")))),
        **{f"choice.{k}": v for k, v in job.choices.items()},
    }
    return hydra.utils.instantiate(cfg.tracking, run_name=job.run_name, parent_run_id=job.parent_run_id,
                                   run_id=run_id, tags=tags, output_dir=str(resolve_path(cfg.paths.output_dir)))


def run(cfg: DictConfig, run_dir: str | os.PathLike, job: JobInfo | None = None, dist_info: DistInfo | None = None,
        step_hook: Callable[[int], None] | None = None) -> FitResult:
    """Train, evaluate and track this process's share of one job.

    Args:
        cfg: The composed training config.
        run_dir: The run's folder (checkpoints, tables, resolved config).
        job: The Hydra job's overrides, choices and parent run (None: none).
        dist_info: This process's rank (None: one process).
        step_hook: Called with the step number after every optimizer step (tests).

    Returns:
        Steps, time, throughput, test metrics and checkpoint paths.

    Raises:
        RunConfigError: Invalid settings.
        CheckpointError: ``resume=`` names an unusable checkpoint or one of another model.
    """
    job = job or JobInfo()
    dist_info = dist_info or DistInfo()
    run_dir = Path(run_dir).absolute()
    validate_run_config(cfg, dist_info.world_size)
    t_start = time.perf_counter()
    device = resolve_device(cfg.trainer.device, dist_info.local_rank)
    seed_everything(int(cfg.seed))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)

    resume_path = ckpt_io.resolve_resume(cfg.resume, run_dir)
    resume = ckpt_io.read_training_state(resume_path) if resume_path is not None else None
    changes = ckpt_io.ResumeChanges()
    if resume is not None:  # fail before any expensive work when the model or the data would change
        changes = ckpt_io.check_resume_config(resume.config or {}, resolved, resume_path)
        if changes.changed and dist_info.is_main:
            log.warning("resuming from %s (step %s) with settings that differ from the checkpoint's: %s", resume_path,
                        resume.state.get("step"), changes.describe())

    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tracker = build_tracker(cfg, job, run_dir, resume.state.get("mlflow_run_id") if resume else None)
    else:
        from lstc_gait.tracking import NullTracker

        tracker = NullTracker()
    status = "FAILED"
    error: BaseException | None = None
    try:
        if changes.changed:  # params keep their first value (MLflow cannot change them): the tag says what changed
            tracker.set_tags({RESUME_CHANGED_TAG: changes.describe()})
        tracker.log_params(resolved)
        if dist_info.is_main:
            config_path = atomic_write_text(run_dir / "config_resolved.yaml",
                                            OmegaConf.to_yaml(OmegaConf.create(resolved)))
            tracker.log_artifact(config_path, "config")
        # progress bars only on a terminal; otherwise the trainer logs a line every trainer.log_every steps
        progress = bool(cfg.trainer.progress) and dist_info.is_main and _is_terminal()
        result = _train(cfg, resolved, run_dir, dist_info, device, tracker, resume, step_hook, progress,
                        job.run_name, replan_schedule=bool(changes.schedule))
        if dist_info.is_main:
            for _, path in sorted(result.checkpoints.items()):
                tracker.log_artifact(path, "checkpoints")
            tracker.log_metrics({"time/total_s": time.perf_counter() - t_start,
                                 "time/train_s": result.seconds,
                                 "train/seq_per_s_avg": result.sequences_per_second}, step=result.step)
        status = "FINISHED"
        return result
    except KeyboardInterrupt as exc:
        status, error = "KILLED", exc
        raise
    except Exception as exc:
        error = exc
        _traceback_to_log_files(exc)
        raise
    finally:
        tracker.end(status, error=error)
        hint = tracker.view_hint() if dist_info.is_main else None
        if hint:
            print(hint, flush=True)


def _is_terminal() -> bool:
    """Whether stderr (where progress bars go) is a terminal."""
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _traceback_to_log_files(error: BaseException) -> None:
    """Write ``error``'s traceback to the log files (Hydra's ``<job>.log``), not to the console.

    The console gets one line from the entry point (a user error) or the traceback from Hydra/Python;
    the job's ``train.log`` keeps the whole reason in both cases.
    """
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "job failed: %s", (error,),
                            (type(error), error, error.__traceback__))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _train(cfg: DictConfig, resolved: dict, run_dir: Path, dist_info: DistInfo, device: torch.device,
           tracker: Any, resume: ckpt_io.Checkpoint | None, step_hook: Callable[[int], None] | None,
           progress: bool, run_name: str | None = None, replan_schedule: bool = False) -> FitResult:
    import hydra.utils
    from torch.utils.data import DataLoader

    from lstc_gait.data import TrainSequenceDataset
    from lstc_gait.data.selection import effective_dataset_node, load_training_data
    from lstc_gait.engine.ema import ModelEMA
    from lstc_gait.engine.optim import param_groups
    from lstc_gait.evaluation.evaluator import Evaluator, TestRows, TrainingEvaluation

    tr = cfg.trainer
    data = load_training_data(effective_dataset_node(resolved) or {}, resolve_path(cfg.paths.data_dir) or "outputs/data",
                              is_main=dist_info.is_main, barrier=dist_utils.barrier, progress=progress)
    ds = data.settings
    dtype = amp_dtype(bool(tr.amp), tr.amp_dtype, device)
    test_rows = TestRows(data.cache, data.test_rows, ds.width, ds.test_max_frames,
                         f"{ds.split} ({len(set(data.cache.index['subject'].astype(str).to_numpy()[data.test_rows]))}"
                         " test subjects)")
    evaluator = Evaluator(ds.evaluation, cfg.eval.metric, test_rows, batch_size=int(cfg.eval.batch_size),
                          num_workers=int(cfg.eval.num_workers), device=device, amp=dtype, dist_info=dist_info,
                          tracker=tracker, progress=progress, title=run_name,
                          same_view=OmegaConf.select(cfg, "eval.exclude_same_view", default="auto"))
    check_training_data(cfg, data, evaluator)  # sampler.p and the protocol's sets, before the first step
    train_set = TrainSequenceDataset(data.cache, data.train_rows, data.train_labels, num_frames=ds.num_frames,
                                     sampling=ds.sampling, width=ds.width, augment=dataclasses.asdict(ds.augment))
    sampler = hydra.utils.instantiate(cfg.sampler, labels=data.train_labels, views=data.train_views,
                                      seed=int(cfg.seed), rank=dist_info.rank, world_size=dist_info.world_size)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=int(tr.num_workers),
                        pin_memory=device.type == "cuda", persistent_workers=False)

    model = hydra.utils.instantiate(cfg.model, num_classes=data.num_classes, _convert_="all")
    if cfg.init_from:
        from lstc_gait.compat import load_reference_weights

        load_reference_weights(model, resolve_path(cfg.init_from))
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
    settings = TrainSettings(max_steps=max_steps, eval_every=int(tr.eval_every), log_every=max(1, int(tr.log_every)),
                             checkpoint_every=int(tr.checkpoint_every), grad_clip=float(tr.grad_clip),
                             progress=progress, monitor=cfg.eval.monitor, max_minutes=max_minutes,
                             eval_every_minutes=float(OmegaConf.select(tr, "eval_every_minutes", default=0.0) or 0.0))
    trainer = Trainer(train_model, loss_fn, optimizer, scheduler, sampler, loader, settings, device,
                      autocast_factory(device, dtype), make_scaler(device, dtype), ema=ema, dist_info=dist_info,
                      evaluator=TrainingEvaluation(evaluator, run_dir, "EMA" if ema is not None else "model"),
                      tracker=tracker, checkpoint_dir=run_dir / "checkpoints", config=resolved,
                      num_classes=data.num_classes, step_hook=step_hook,
                      compile=bool(OmegaConf.select(cfg, "trainer.compile", default=False)))
    trainer.extra_state["mlflow_run_id"] = getattr(tracker, "run_id", None)
    if resume is not None:
        trainer.load_state_dict(resume.state, resume.path, replan_schedule=replan_schedule)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume.path, trainer.step, trainer.epoch,
                 trainer.index)
        if replan_schedule and dist_info.is_main:
            log.warning("learning-rate schedule re-planned for %d steps from step %d: lr %.3g now", max_steps,
                        trainer.step, optimizer.param_groups[0]["lr"])
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
        # what evaluate / extract / export need next, and where the tables are
        log.info("run folder: %s (checkpoints/best.pt, checkpoints/last.pt, tables)", run_dir)
    return result


def _ddp_worker(rank: int, cfg_dict: dict, run_dir: str, job: JobInfo, world_size: int, port: int,
                backend: str) -> None:
    """Entry of one spawned DDP process: set it up, join the group, run."""
    logging.basicConfig(level=logging.INFO, format="[rank %(process)d] %(levelname)s %(name)s: %(message)s")
    cfg = OmegaConf.create(cfg_dict)
    info = DistInfo(rank, world_size, rank)
    configure_process(resolve_device(cfg.trainer.device, rank), bool(cfg.trainer.deterministic), world_size)
    dist_utils.init_process_group(info, backend, f"tcp://127.0.0.1:{port}")
    try:
        run(cfg, run_dir, job, info)
    finally:
        dist_utils.cleanup()


def launch(cfg: DictConfig, run_dir: str | os.PathLike, job: JobInfo | None = None) -> FitResult | None:
    """Run one training job: one process, spawned DDP processes (``trainer=ddp``), or a torchrun rank.

    Args:
        cfg: The composed training config.
        run_dir: The run's folder.
        job: The Hydra job's overrides, choices and parent run.

    Returns:
        The result in this process (None in the parent of spawned DDP processes).

    Raises:
        RunConfigError: Invalid settings (e.g. a batch not divisible by the processes).
    """
    job = job or JobInfo()
    tr = cfg.trainer
    validate_run_config(cfg)  # before spawning: a bad setting is one line in this process, not N tracebacks
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
        raise RunConfigError(f"trainer.devices={world} but only {torch.cuda.device_count()} GPUs are visible")
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    port = dist_utils.free_port()
    log.info("spawning %d %s processes (127.0.0.1:%d)", world, backend, port)
    dist_utils.spawn(_ddp_worker, world, (cfg_dict, str(Path(run_dir).absolute()), job, world, port, backend))
    return None


def job_info_from_hydra() -> JobInfo:
    """The running Hydra job's overrides, group choices and (multirun) sweep parent run.

    Returns:
        The job info.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides = [str(o) for o in hc.overrides.task]
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
    parent = swept = None
    tracked_sweep = False
    if hc.mode == RunMode.MULTIRUN:
        from lstc_gait.tracking.sweep import parent_run_id, swept_keys_of

        parent = parent_run_id(hc.sweep.dir)
        swept = swept_keys_of(hc.sweep.dir)
        tracked_sweep = any(str(OmegaConf.select(c, "_target_", default="")).endswith(".SweepParentCallback")
                            for c in (hc.callbacks or {}).values())
        if swept is None:  # not recorded (callback off): the preset's swept keys at least
            swept = [str(k) for k in (OmegaConf.select(hc, "sweeper.params", default=None) or {})] or None
    return JobInfo(overrides=overrides, choices=choices, parent_run_id=parent, swept=swept,
                   in_tracked_sweep=tracked_sweep)


__all__ = ["RESUME_CHANGED_TAG", "JobInfo", "RunConfigError", "build_tracker", "check_training_data",
           "job_info_from_hydra", "launch", "run", "stripe_rows_problem", "validate_run_config"]
