"""Time to accuracy: train a preset for a wall-clock budget, evaluating at fixed intervals.

Prints, and logs to MLflow as curves (metric step = training seconds), cross-view and same-view
rank-1 of NM / BG / CL against training minutes, beside the GEI + nearest-neighbour baseline on
the same test subjects, for the LSTC/LSTP preset and, with ``--gaitset``, for ``model=gaitset``
under the same pipeline (on GaitSet's unordered frame sets at full resolution: see
:func:`curve_presets`). States the machine (CPU model, flags, threads, native bf16).

    python benchmarks/time_to_accuracy.py --minutes 10 --every 2 [--gaitset] [-- overrides...]
    python benchmarks/time_to_accuracy.py --minutes 30 --every 5 -- experiment=casia_b_cpu \\
        dataset=casia_b dataset.root=/data/CASIA-B      # any prepared cache / raw dataset

Everything after ``--`` is a Hydra override of ``python -m lstc_gait.train`` (the default is the
main job's SynthGait instance). Training time excludes the evaluations; results depend on the
machine (see docs/training.md, ``trainer.max_minutes``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SETS = ("NM", "BG", "CL")


def machine_info() -> dict[str, str]:
    """CPU model, the SIMD flags that matter for training speed, threads, and native bf16.

    "Native bf16" is :func:`lstc_gait.models.fastops.cpu_bf16_supported` (the test that
    ``trainer.amp_dtype=auto`` uses), not oneDNN's own answer, which is True wherever it can
    emulate bf16 (every AVX-512 CPU); both are printed.

    Returns:
        A dict of printable strings.
    """
    import torch

    from lstc_gait.models.fastops import cpu_bf16_supported
    from lstc_gait.ops.build import cpu_flags, cpu_model

    model = cpu_model()
    flags = set(cpu_flags().split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older builds
        onednn_bf16 = False
    return {"cpu": model, "flags": " ".join(f for f in wanted if f in flags) or "n/a",
            "cpu_count": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
            "bf16_native": str(cpu_bf16_supported()), "onednn_bf16": str(onednn_bf16),
            "torch": torch.__version__,
            "load_avg": " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"}


def run_curve(label: str, overrides: list[str], minutes: float, every: float, out_dir: Path) -> dict:
    """Train one preset for ``minutes`` with an evaluation every ``every`` minutes.

    Args:
        label: the curve's name.
        overrides: Hydra overrides of the training config.
        minutes: training budget (``trainer.max_minutes``).
        every: evaluation interval (``trainer.eval_every_minutes``).
        out_dir: where the run's files go.

    Returns:
        ``{"label", "history": [{step, train_minutes, metrics...}], "result", "cfg"}``.
    """
    from hydra import compose, initialize_config_dir

    import lstc_gait
    from lstc_gait.config_schema import register_configs
    from lstc_gait.train import JobInfo, run

    ovr = [f"trainer.max_minutes={minutes}", f"trainer.eval_every_minutes={every}", "trainer.max_steps=0",
           "trainer.max_epochs=0", "trainer.progress=false", "eval.gei_baseline=false", *overrides]
    register_configs()
    conf_dir = str(Path(lstc_gait.__file__).resolve().parent / "conf")
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose(config_name="config", overrides=ovr)
    result = run(cfg, out_dir / label, JobInfo(overrides=ovr))
    return {"label": label, "history": result.history, "result": result, "cfg": cfg}


def curve_presets(overrides: list[str], out: Path, gaitset: bool, mlflow: bool = True) -> list[tuple[str, list[str]]]:
    """The runs of one curve table: the LSTC/LSTP preset and, when asked, ``model=gaitset``.

    Args:
        overrides: The user's Hydra overrides (after ``--``), applied to every run.
        out: The benchmark's output folder (``paths.output_dir`` of every run).
        gaitset: Also train ``model=gaitset``.
        mlflow: Track the runs (False appends ``tracking=none``).

    Returns:
        ``[(label, overrides), ...]``: ``lstc`` first, then ``gaitset``.
    """
    base = [f"paths.output_dir={out}", *overrides]
    if not mlflow:
        base.append("tracking=none")
    presets = [("lstc", base)]
    if gaitset:
        # GaitSet is order-free: it trains on unordered sets of frames, as in its paper, and at the
        # paper's 64 x 44 unless asked otherwise (experiment=casia_b_cpu's 32 x 22 resize is LSTC's
        # width-for-resolution trade, docs/training.md)
        own = ["model=gaitset", "dataset.sampling=random"]
        if not any(o.lstrip("+~").startswith("model.input_size=") for o in overrides):
            own.append("model.input_size=null")
        presets.append(("gaitset", [*base, *own]))
    return presets


def main(argv: list[str] | None = None) -> None:
    """Command line entry; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per preset")
    ap.add_argument("--every", type=float, default=2.0, help="evaluate every so many training minutes")
    ap.add_argument("--gaitset", action="store_true",
                    help="also train model=gaitset under the same pipeline, on its own frame sampling (an "
                         "unordered set: dataset.sampling=random) at full resolution (model.input_size=null "
                         "unless the overrides set it)")
    ap.add_argument("--out", type=Path, default=Path("outputs/time_to_accuracy"))
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args(argv)
    import numpy as np
    from omegaconf import OmegaConf

    from lstc_gait.data.selection import effective_dataset_node, load_training_data
    from lstc_gait.evaluation.baselines import gei_baseline
    from lstc_gait.utils.paths import resolve_path

    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    presets = curve_presets(overrides, args.out, gaitset=args.gaitset, mlflow=not args.no_mlflow)
    curves = [run_curve(label, ovr, args.minutes, args.every, args.out / "runs") for label, ovr in presets]
    # GEI + NN on the very test rows the models were evaluated on
    cfg = curves[0]["cfg"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    data = load_training_data(effective_dataset_node(resolved) or {}, resolve_path(cfg.paths.data_dir) or "outputs/data",
                              progress=False)
    ds = data.settings
    _, gei = gei_baseline(data.cache, data.test_rows, ds.evaluation, ds.width, str(cfg.eval.metric))
    cols = [f"{s}/rank1" for s in SETS] + [f"{s}/same_view_rank1" for s in SETS]
    head = "| preset | min | step | " + " | ".join(c.replace("/rank1", " x-view").replace("/same_view_rank1", " same")
                                                 for c in cols) + " |"
    print("\nrank-1 (%) vs training minutes (cross-view: identical view excluded)\n" + head)
    print("|" + "---|" * (len(cols) + 3))
    for c in curves:
        for h in c["history"]:
            vals = " | ".join(f"{h.get(k, float('nan')):.1f}" for k in cols)
            print(f"| {c['label']} | {h['train_minutes']:.1f} | {int(h['step'])} | {vals} |")
    print("| GEI + NN | - | - | " + " | ".join(f"{gei.get(k, float('nan')):.1f}" for k in cols) + " |", flush=True)
    if args.no_mlflow:
        return
    import mlflow

    uri = f"sqlite:///{Path(args.out).absolute()}/mlflow.db"
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", uri))
    mlflow.set_experiment("time_to_accuracy")
    with mlflow.start_run(run_name=f"{args.minutes:g} min, every {args.every:g}"):
        mlflow.log_params({f"machine.{k}": v for k, v in info.items()})
        mlflow.log_params({"minutes": args.minutes, "every": args.every, "overrides": " ".join(overrides) or "-"})
        for c in curves:
            for h in c["history"]:
                sec = int(round(h["train_minutes"] * 60))
                mlflow.log_metrics({f"{c['label']}/{k}": float(h[k]) for k in cols if k in h}, step=sec)
        mlflow.log_metrics({f"gei/{k}": float(gei[k]) for k in cols if k in gei and np.isfinite(gei[k])}, step=0)
    print(f"logged to MLflow experiment time_to_accuracy ({mlflow.get_tracking_uri()})")


if __name__ == "__main__":
    main()
