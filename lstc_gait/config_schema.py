"""Typed schemas of the Hydra config, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts its defaults list with ``train_schema`` (the :class:`TrainConfig`
dataclass below); every group option (``model/lstc.yaml``, ``loss/ce.yaml``, ...) is merged on top
of its typed node. A misspelt key or a value of the wrong type therefore fails at compose time,
and OmegaConf's message names the full key (``Key 'lrr' not in 'OptimizerConfig' ...
full_key: trainer.optimizer.lrr``). Values with a fixed set of choices are checked by
:func:`check_choices` before anything is built, again naming the key.
"""

# No `from __future__ import annotations`: OmegaConf reads the annotations at runtime.
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from lstc_gait.data.config import DatasetConfig


@dataclass
class ModelConfig:
    """The model node: a registered variant and its keyword arguments (num_classes is given at build time).

    The one place the model defaults live: ``conf/model/<variant>.yaml`` only names the variant, and
    :func:`lstc_gait.models.registry.build_model` builds it. A checkpoint's stored model config is
    rebuilt by :func:`lstc_gait.engine.checkpoint.model_from_stored_config`, which never reads these
    defaults (a key it lacks means the legacy behaviour).
    """

    _target_: str = "lstc_gait.models.registry.build_model"
    variant: str = "lstc"  # registered in lstc_gait.models.registry (model=lstc | dynamic | gaitset)
    in_channels: int = 1
    base_channels: int = 8  # the CPU-sized main job; experiment presets set the field's widths
    num_stripes: int = 8
    embedding_dim: int = 256
    kernels: list[list[int]] = field(default_factory=lambda: [[3, 7, 3], [3, 5, 3], [3, 3, 3]])
    use_temporal: bool = True
    use_spatial: bool = True
    use_joint: bool = True
    joint_type: str | None = None  # None: the variant's joint branch (lstc | dynamic)
    branch_width: str = "half_split"
    min_branch_width: int = 8
    dynamic_experts: int = 4
    dynamic_gate_hidden: int = 0
    dynamic_temperature: float = 1.0
    # The pooling group owns these four; the model reads them by interpolation.
    pooling: str = "${pooling.name}"
    topk: int = "${pooling.topk}"  # type: ignore[assignment]
    temperature: float = "${pooling.temperature}"  # type: ignore[assignment]
    spatial_pooling: str = "${pooling.spatial}"
    # Head. A stored config WITHOUT these keys (checkpoints written before they existed) rebuilds
    # the legacy single-vector model (engine.checkpoint.LEGACY_MODEL_DEFAULTS: head=single).
    head: str = "parts"  # parts: (N, D, P) part embedding | single: one (N, D) vector (original head)
    part_dim: int = 128  # D per part (parts head, GaitSet)
    pyramid: list[int] | None = None  # stripe pyramid levels (parts head) / HPM bins (GaitSet)
    bnneck: bool = True  # BNNeck classifier (per part with the parts head) for the CE term
    input_size: list[int] | None = None  # model-input resize (h, w) of the 64 x width frames
    gaitset_channels: list[int] | None = None  # GaitSet stage widths (default 32/64/128)


@dataclass
class PoolingConfig:
    """Temporal pooling of the stripe features (LSTP hard/soft, or the mean/max baselines)."""

    name: str = "hard"  # hard (top-k LSTP) | soft (softmax-weighted LSTP) | mean | max | set (GaitSet's)
    topk: int = 2
    temperature: float = 1.0
    spatial: str = "mean"  # per-frame pooling of a stripe's pixels: mean (original LSTP) | mean_max (GaitSet's strips)


@dataclass
class LossConfig:
    """The ``loss`` node: :class:`lstc_gait.engine.losses.GaitLoss` arguments (CE + batch-all/batch-hard triplet)."""
    _target_: str = "lstc_gait.engine.losses.GaitLoss"
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    label_smoothing: float = 0.1
    margin: float = 0.2
    distance: str = "euclidean"  # euclidean | sqeuclidean | cosine
    mining: str = "batch_all"  # batch_all | batch_hard (Hermans et al. 2017)
    nonzero_mean: bool = True  # batch_all: average over the triplets with a non-zero loss


@dataclass
class SamplerConfig:
    """A global batch holds p x k sequences; ``random`` draws them uniformly, ``pk`` takes k
    sequences of each of p identities, ``multiview_pk`` spreads each identity's k over its views."""

    _target_: str = "lstc_gait.data.samplers.PKSampler"
    p: int = 4
    k: int = 4


@dataclass
class OptimizerConfig:
    """The ``trainer.optimizer`` node: a partial ``torch.optim`` optimizer (Adam 1e-3 by default)."""
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SchedulerConfig:
    """Linear warmup from ``warmup_start`` x lr to lr, then cosine to ``min_lr_ratio`` x lr (per step)."""

    _target_: str = "lstc_gait.engine.optim.warmup_cosine"
    _partial_: bool = True
    warmup_steps: int = 0
    warmup_start: float = 0.01
    min_lr_ratio: float = 0.01
    decay: str = "step"  # cosine | step (x step_factor at each fraction of step_at) | none
    step_at: list[float] = field(default_factory=lambda: [0.8])
    step_factor: float = 0.1


@dataclass
class EMAConfig:
    """The ``trainer.ema`` node: an exponential moving average of the weights, evaluated and saved."""
    enabled: bool = True
    decay: float = 0.995
    warmup: bool = True  # effective decay min(decay, (1 + n) / (10 + n)) so early averages are not stale


@dataclass
class TrainerConfig:
    """The ``trainer`` node: device, processes, budget, intervals, precision and the optimizer."""
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    strategy: str = "single"  # single | ddp
    devices: int = 1  # processes for strategy=ddp (spawned unless launched by torchrun)
    backend: str = "auto"  # auto (gloo on CPU, nccl on CUDA) | gloo | nccl
    max_steps: int = 240  # budget in iterations; 0 means use max_epochs (or max_minutes)
    max_epochs: int = 0  # budget in sampler epochs when max_steps is 0
    # Opt-in wall-clock budget (minutes of training, evaluation excluded): the schedule is planned
    # for the steps that fit (measured step time), capped by max_steps when that is > 0.
    max_minutes: float = 0.0
    eval_every_minutes: float = 0.0  # evaluate every so many training minutes (0: off)
    eval_every: int = 0  # steps between evaluations; 0 = evaluate once at the end
    log_every: int = 5  # steps between loss/lr logging (the only host syncs of the loop)
    checkpoint_every: int = 100  # steps between writes of checkpoints/last.pt
    amp: bool = False
    amp_dtype: str = "auto"  # auto (bf16 on CPU where native, else fp32; fp16 + grad scaler on CUDA) | bf16 | fp16
    compile: bool = False  # torch.compile the model for training and evaluation (compile time is logged)
    grad_clip: float = 5.0  # max global grad norm, every step; 0 disables
    num_workers: int = 1
    deterministic: bool = False  # torch.use_deterministic_algorithms; needed for bitwise resume on CUDA
    sync_bn: bool = True  # DDP: BatchNorm statistics over the global batch
    progress: bool = True
    # Fields of dataset.synthetic replaced when the dataset is synthetic (trainer=debug: a tiny instance).
    shrink_synthetic: dict[str, Any] | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


@dataclass
class EvalConfig:
    """The ``eval`` node: distance, batch size and the metric that picks ``best.pt``."""
    metric: str = "euclidean"  # euclidean | cosine
    batch_size: int = 8
    monitor: str = "auto"  # metric that picks best.pt; auto = mean of the probe sets' rank-1
    num_workers: int = 0
    # retrieval: ignore gallery entries of the query's subject at the query's own view?
    # auto = only when the test data has more than one view (a one-camera set keeps them) | true | false
    exclude_same_view: str = "auto"
    gei_baseline: bool = True  # after training, print GEI + nearest neighbour on the same test rows


@dataclass
class TrackingConfig:
    """The ``tracking`` node: an :class:`lstc_gait.tracking.mlflow.MLflowTracker` (``tracking=none``: a NullTracker)."""
    _target_: str = "lstc_gait.tracking.mlflow.MLflowTracker"
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<paths.output_dir>/mlflow.db
    experiment: str = "lstc_gait"
    artifact_location: str | None = None  # None: <store dir>/mlartifacts for local SQLite stores


@dataclass
class PathsConfig:
    """The ``paths`` node shared by every command: data and output folders."""
    data_dir: str = "outputs/data"  # prepared caches and generated synthetic datasets
    output_dir: str = "outputs"  # run dirs and the default MLflow store


@dataclass
class TrainConfig:
    """The typed root of ``conf/config.yaml`` (registered as ``train_schema``)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    resume: str | None = None  # PATH to a checkpoint, or "auto": <run dir>/checkpoints/last.pt if present
    init_from: str | None = None  # warm start from an original lstc-gait checkpoint


CHOICES: dict[str, tuple[str, ...]] = {
    "model.joint_type": ("lstc", "dynamic"),  # None (the variant's) is allowed
    "pooling.name": ("hard", "soft", "mean", "max", "set"),
    "pooling.spatial": ("mean", "mean_max"),
    "loss.distance": ("euclidean", "sqeuclidean", "cosine"),
    "loss.mining": ("batch_all", "batch_hard"),
    "model.head": ("single", "parts"),
    "trainer.scheduler.decay": ("cosine", "step", "none"),
    "trainer.strategy": ("single", "ddp"),
    "trainer.backend": ("auto", "gloo", "nccl"),
    "trainer.amp_dtype": ("auto", "bf16", "fp16"),
    "eval.metric": ("euclidean", "cosine"),
}


def check_choices(cfg: DictConfig | Any) -> None:
    """Check the values that have a fixed set of choices, before anything is built.

    Args:
        cfg: The composed training config.

    Raises:
        ValueError: Naming the key and the allowed values of the first bad setting.
    """
    from lstc_gait.models.registry import model_names

    variant = OmegaConf.select(cfg, "model.variant", default=None)
    if variant is not None and variant not in model_names():
        raise ValueError(f"config key model.variant={variant!r} is not one of: {', '.join(model_names())}")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in allowed:
            raise ValueError(f"config key {key}={value!r} is not one of: {', '.join(allowed)}")
    device = OmegaConf.select(cfg, "trainer.device", default="auto")
    if not (device in ("auto", "cpu", "cuda") or str(device).startswith("cuda:")):
        raise ValueError(f"config key trainer.device={device!r} must be auto, cpu, cuda or cuda:N")
    for key in ("sampler.p", "sampler.k", "trainer.devices", "eval.batch_size"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value < 1:
            raise ValueError(f"config key {key}={value} must be >= 1")
    for key in ("trainer.max_steps", "trainer.max_epochs", "trainer.max_minutes", "trainer.eval_every_minutes"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value < 0:  # a negative budget or interval would silently mean "off"
            raise ValueError(f"config key {key}={value} must be >= 0 (0: off)")
    if OmegaConf.select(cfg, "trainer.max_steps", default=1) <= 0 and \
            OmegaConf.select(cfg, "trainer.max_epochs", default=1) <= 0 and \
            OmegaConf.select(cfg, "trainer.max_minutes", default=0) <= 0:
        raise ValueError("set a training budget: trainer.max_steps > 0, trainer.max_epochs > 0 or "
                         "trainer.max_minutes > 0")


def model_default(name: str) -> Any:
    """The schema's default for one ``model`` key, as a plain value for a constructor's signature.

    The model constructors (:class:`lstc_gait.models.LSTCBackbone`, :class:`~lstc_gait.models.heads.GaitModel`,
    :class:`~lstc_gait.models.gaitset.GaitSet` and their builders) take their keyword defaults from
    here, so :class:`ModelConfig` stays the one place the defaults live. The pooling keys, which
    the model node reads from the ``pooling`` group by interpolation, resolve to
    :class:`PoolingConfig`'s defaults; ``joint_type=None`` (the variant's own joint branch)
    resolves to the default variant's (``lstc``); lists become tuples (immutable defaults).

    Args:
        name: A :class:`ModelConfig` field, e.g. ``"base_channels"``.

    Returns:
        The default value: an int, float, bool, str, None, or a (nested) tuple.

    Raises:
        KeyError: ``name`` is not a field of :class:`ModelConfig`.
    """
    spec = {f.name: f for f in fields(ModelConfig)}.get(name)
    if spec is None:
        raise KeyError(f"{name!r} is not a model config key")
    value = spec.default_factory() if spec.default is NO_DEFAULT else spec.default  # type: ignore[misc]
    if isinstance(value, str) and value.startswith("${pooling."):
        value = getattr(PoolingConfig, value[len("${pooling."):-1])
    if name == "joint_type" and value is None:
        value = ModelConfig.variant  # the default variant, lstc, uses the lstc joint branch
    return _frozen(value)


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def register_configs() -> None:
    """Register the typed root (``train_schema``) in Hydra's ConfigStore (idempotent)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


__all__ = [
    "CHOICES", "EMAConfig", "EvalConfig", "LossConfig", "ModelConfig", "OptimizerConfig", "PathsConfig",
    "PoolingConfig", "SamplerConfig", "SchedulerConfig", "TrackingConfig", "TrainConfig", "TrainerConfig",
    "MISSING", "check_choices", "model_default", "register_configs",
]
