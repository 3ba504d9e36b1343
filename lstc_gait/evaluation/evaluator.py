"""The one evaluator: embed the test rows, run the protocol, write the tables with a correct header, log.

Training (every ``trainer.eval_every`` steps and at the end), ``python -m lstc_gait.evaluate`` and
``python -m lstc_gait.extract`` all go through :class:`Evaluator`, so a table says the same thing
wherever it was made. Every table's header states its protocol, distance, checkpoint, split and
misses policy; the misses policy is per table (:func:`misses_policy`): OU-MVLP's
``rank1_excl_missing`` excludes probes without a gallery sequence of their subject at that view
(Takemura et al. 2018), the other rank-1 tables count them as misses.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lstc_gait.errors import UserError

log = logging.getLogger(__name__)

PROTOCOL_NAMES = ("casia_b", "ou_mvlp", "retrieval")
DISTANCES = ("euclidean", "cosine")


class EvaluationError(UserError, ValueError):
    """A protocol, distance or label set the evaluator cannot use."""


def misses_policy(protocol: str, table_name: str) -> str:
    """How a table treats probes whose subject has no gallery sequence at a view.

    Args:
        protocol: ``casia_b`` (Yu et al. 2006), ``ou_mvlp`` (Takemura et al. 2018) or ``retrieval``.
        table_name: The table's name (``rank1``, ``rank1_excl_missing``, ``crossview_...``).

    Returns:
        The text of the header's ``misses_counted`` line (starts with ``yes``, ``no`` or ``n/a``).
    """
    if protocol == "retrieval":
        return "n/a (queries without a positive in the gallery are skipped and counted)"
    if "excl_missing" in table_name:
        return "no (probes without a gallery sequence of their subject at that view excluded)"
    return "yes (probes without a gallery sequence of their subject at that view count as misses)"


HEADLINE_METRIC = "mean/rank1"  # logged as test/mean/rank1: the one number a run is sorted by
CASIA_B_CONDITIONS = ("NM", "BG", "CL")


def headline_rank1(metrics: Mapping[str, float], protocol: str | None = None) -> float | None:
    """A run's headline number, ``mean/rank1`` (logged as ``test/mean/rank1``).

    CASIA-B (Yu et al. 2006): the mean of the NM, BG and CL rank-1 (each the mean over probe views,
    identical view excluded, misses counted). OU-MVLP (Takemura et al. 2018): the protocol's rank-1
    with misses counted (``rank1``, not ``rank1_excl_missing``). Retrieval: its rank-1.

    Args:
        metrics: Metric name -> value without the ``test/`` prefix (``NM/rank1``, ``rank1``, ...).
        protocol: ``casia_b``, ``ou_mvlp`` or ``retrieval``; None infers it from the names present.

    Returns:
        The headline in percent, or None when the metrics hold none of its parts.
    """
    sets = [float(metrics[f"{c}/rank1"]) for c in CASIA_B_CONDITIONS
            if metrics.get(f"{c}/rank1") is not None and np.isfinite(float(metrics[f"{c}/rank1"]))]
    if protocol == "casia_b" or (protocol is None and sets):
        return float(sum(sets) / len(sets)) if sets else None
    value = metrics.get("rank1")
    return float(value) if value is not None and np.isfinite(float(value)) else None


def table_header(protocol: str, metric: str, checkpoint: str, split: str) -> dict[str, str]:
    """The facts every table states except the misses policy (set per table by :func:`write_tables`).

    Args:
        protocol: The protocol name.
        metric: The distance (``euclidean`` or ``cosine``).
        checkpoint: Where the embeddings came from (file, kind, weights, step).
        split: The dataset and split the rows belong to.

    Returns:
        ``{"protocol", "distance", "checkpoint", "split"}``.
    """
    return {"protocol": protocol, "distance": metric, "checkpoint": checkpoint, "split": split}


def run_protocol(protocol: str, embeddings: np.ndarray, subjects: Sequence[str], types: Sequence[str],
                 views: Sequence[str], metric: str = "euclidean",
                 same_view: Any = "auto") -> tuple[dict[str, Any], dict[str, float]]:
    """Run a protocol on labelled embeddings.

    Args:
        protocol: ``casia_b`` (Yu et al. 2006), ``ou_mvlp`` (Takemura et al. 2018) or ``retrieval``.
        embeddings: float (N, D), or (N, C, parts) part features (per-part distances are averaged).
        subjects: (N,) subject ids.
        types: (N,) sequence types (``nm-01``, ``00``, ...), which pick probe and gallery sets.
        views: (N,) view labels.
        metric: ``euclidean`` or ``cosine``.
        same_view: Retrieval's ``exclude_same_view`` (``auto``: only with more than one view).

    Returns:
        (tables: name -> DataFrame of percentages, metrics: name -> float).

    Raises:
        EvaluationError: Unknown protocol or distance.
        ProtocolError: A missing gallery or probe set, or a table where every query was skipped.
    """
    if protocol not in PROTOCOL_NAMES:
        raise EvaluationError(f"protocol={protocol!r} is not one of: {', '.join(PROTOCOL_NAMES)}")
    if metric not in DISTANCES:
        raise EvaluationError(f"metric={metric!r} is not one of: {', '.join(DISTANCES)}")
    from lstc_gait.evaluation.protocols import protocol_metrics

    return protocol_metrics(protocol, np.asarray(embeddings, dtype=np.float32), np.asarray(subjects).astype(str),
                            np.asarray(types).astype(str), np.asarray(views).astype(str), metric,
                            same_view=same_view)


def same_view_header(protocol: str, same_view: Any, views: Sequence[str]) -> dict[str, str]:
    """The retrieval tables' header line saying whether same-view positives were excluded.

    Args:
        protocol: The protocol name (only ``retrieval`` gets the line).
        same_view: The ``exclude_same_view`` setting.
        views: (N,) view labels of the evaluated sequences.

    Returns:
        ``{"same_view_positives": ...}`` for retrieval, else ``{}``.
    """
    if protocol != "retrieval":
        return {}
    from lstc_gait.evaluation.protocols import exclude_same_view, same_view_setting

    setting = same_view_setting(same_view)
    excluded = exclude_same_view(setting, np.asarray(views).astype(str))
    nviews = len(set(np.asarray(views).astype(str).tolist()))
    return {"same_view_positives": f"{'excluded' if excluded else 'kept'} (exclude_same_view={setting}, "
                                   f"{nviews} view{'s' if nviews != 1 else ''})"}


def write_tables(tables: Mapping[str, Any], out_dir: str | os.PathLike,
                 header: Mapping[str, str]) -> dict[str, list[Path]]:
    """Write each table as CSV + Markdown with the header and its own misses policy.

    Args:
        tables: Name -> DataFrame (a dict row is turned into a one-row DataFrame; other values skipped).
        out_dir: Folder for ``<name>.csv`` and ``<name>.md``.
        header: :func:`table_header`'s dict.

    Returns:
        Table name -> [csv path, md path].

    Raises:
        OSError: The folder cannot be written.
    """
    import pandas as pd

    from lstc_gait.evaluation.tables import write_table

    written: dict[str, list[Path]] = {}
    protocol = str(header.get("protocol", ""))
    for name, table in tables.items():
        if isinstance(table, Mapping):
            table = pd.DataFrame([table])
        if not isinstance(table, pd.DataFrame):
            continue
        stem = str(name).replace("/", "_").replace(" ", "_")
        csv_path, md_path = write_table(table, Path(out_dir) / stem,
                                        {**header, "misses_counted": misses_policy(protocol, str(name))})
        written[str(name)] = [Path(csv_path), Path(md_path)]
    return written


def format_tables(tables: Mapping[str, Any], header: Mapping[str, str], title: str | None = None) -> str:
    """The header line and each per-view table (cross-view matrices are only named) as text.

    Args:
        tables: Name -> DataFrame.
        header: :func:`table_header`'s dict.
        title: A first line naming whose tables these are (the run's name in a sweep, where the
            jobs' outputs interleave); None: no such line.

    Returns:
        Printable text.
    """
    import pandas as pd

    from lstc_gait.evaluation.tables import format_table

    lines = [f"== {title} ==", ""] if title else []
    lines.append(" | ".join(f"{k}: {v}" for k, v in header.items()))
    for name, table in tables.items():
        if isinstance(table, pd.DataFrame) and not str(name).startswith("crossview"):
            lines.append(f"\n{name} (misses counted: {misses_policy(header['protocol'], str(name))})")
            lines.append(format_table(table))
    if any(str(n).startswith("crossview") for n in tables):
        lines.append("\n(probe x gallery view matrices: crossview_* files)")
    return "\n".join(lines)


@dataclass
class TestRows:
    """Labelled whole sequences of a cache to embed.

    Attributes:
        cache: The ``SequenceCache``.
        rows: int64 (N,) cache rows.
        width: Silhouette width the model takes (pixels).
        max_frames: Cap on frames per sequence (None: all).
        split: Text naming the dataset and split, for table headers.
    """

    __test__ = False  # not a pytest test class despite its name

    cache: Any
    rows: np.ndarray
    width: int = 44
    max_frames: int | None = None
    split: str = ""

    def labels(self) -> dict[str, np.ndarray]:
        """Per-row labels.

        Returns:
            ``{"subjects", "types", "views", "seqs"}``, each a (N,) str array in row order.
        """
        index = self.cache.index.iloc[np.asarray(self.rows)]
        return {k: index[c].astype(str).to_numpy() for k, c in
                (("subjects", "subject"), ("types", "type"), ("views", "view"), ("seqs", "seq"))}


@dataclass
class EvalResult:
    """What one evaluation produced.

    Attributes:
        tables: Name -> DataFrame (percent).
        metrics: Name -> value (``NM/rank1``, ``mAP``, ...; without the ``test/`` prefix).
        files: Table name -> written [csv, md] (the last of the output folders).
        header: The tables' shared header.
    """

    tables: dict[str, Any]
    metrics: dict[str, float]
    files: dict[str, list[Path]] = field(default_factory=dict)
    header: dict[str, str] = field(default_factory=dict)


class Evaluator:
    """Embed test rows, run the protocol, write and print the tables, log tables and ``test/`` metrics.

    Under DDP each rank embeds its shard of the rows and rank 0 gathers them, scores and logs; the
    other ranks return empty results.

    Args:
        protocol: ``casia_b`` (Yu et al. 2006), ``ou_mvlp`` (Takemura et al. 2018) or ``retrieval``.
        metric: ``euclidean`` or ``cosine``.
        test_rows: The rows :meth:`embed` and :meth:`__call__` embed (None: only
            :meth:`evaluate_embeddings` is usable).
        batch_size: Sequences per inference batch.
        num_workers: DataLoader workers.
        device: Inference device.
        amp: Autocast dtype, True (bf16 on CPU, fp16 on CUDA), or None/False (float32).
        dist_info: This process's rank (``engine.distributed.DistInfo``); None: one process.
        tracker: ``MLflowTracker`` / ``NullTracker``; None logs nothing.
        progress: Show a progress bar (rank 0).
        show: Print the tables.
        same_view: Retrieval's ``exclude_same_view``: ``auto`` (exclude the query's subject at the
            query's view only when the sequences have more than one view), ``true`` or ``false``.
        verification: Also compute ROC, EER and TAR@FAR 1e-2/1e-3 on the protocol's probe x gallery
            pairs (metrics ``verify/...``) and write/log ``roc.png`` (``evaluation/verification.py``).
        title: Printed above the tables (the run's name, so parallel sweep jobs' tables are told apart).

    Raises:
        EvaluationError: Unknown protocol or distance.
        ProtocolError: An unknown ``same_view`` setting.
    """

    def __init__(self, protocol: str, metric: str = "euclidean", test_rows: TestRows | None = None, *,
                 batch_size: int = 8, num_workers: int = 0, device: torch.device | str = "cpu",
                 amp: torch.dtype | bool | None = None, dist_info: Any = None, tracker: Any = None,
                 progress: bool = True, show: bool = True, verification: bool = True,
                 title: str | None = None, same_view: Any = "auto") -> None:
        if protocol not in PROTOCOL_NAMES:
            raise EvaluationError(f"protocol={protocol!r} is not one of: {', '.join(PROTOCOL_NAMES)}")
        if metric not in DISTANCES:
            raise EvaluationError(f"metric={metric!r} is not one of: {', '.join(DISTANCES)}")
        from lstc_gait.engine.distributed import DistInfo
        from lstc_gait.evaluation.protocols import same_view_setting

        self.protocol = protocol
        self.metric = metric
        self.same_view = same_view_setting(same_view)
        self.test_rows = test_rows
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.device = torch.device(device)
        self.amp = amp
        self.dist = dist_info or DistInfo()
        self.tracker = tracker
        self.progress = progress
        self.show = show
        self.verification = verification
        self.title = title
        self.last: EvalResult | None = None

    def check(self, labels: Mapping[str, Sequence[str]] | None = None) -> None:
        """Check that the rows hold what the protocol scores (gallery and probe sets), before embedding.

        Args:
            labels: ``{"subjects", "types", "views"}`` (None: those of :attr:`test_rows`).

        Raises:
            ProtocolError: Naming the missing set, or why nothing could be measured.
            EvaluationError: Neither labels nor test rows.
        """
        from lstc_gait.evaluation.protocols import check_protocol_data

        if labels is None:
            if self.test_rows is None:
                raise EvaluationError("this Evaluator has no test rows to check")
            labels = self.test_rows.labels()
        check_protocol_data(self.protocol, labels["subjects"], labels["types"], labels["views"], self.same_view)

    def embed(self, model: nn.Module) -> np.ndarray:
        """Embeddings of :attr:`test_rows` in row order (gathered on rank 0 under DDP).

        Args:
            model: Returns ``{"embedding": float (N, D)}`` for float (N, 1, T, H, W) silhouettes and
                int64 (N,) lengths; it is put in eval mode for the pass.

        Returns:
            float32 (N, D) (on ranks other than 0 under DDP: this rank's shard only).

        Raises:
            EvaluationError: No test rows were given.
        """
        from lstc_gait.data import TestSequenceDataset
        from lstc_gait.engine import distributed as dist_utils
        from lstc_gait.evaluation.embed import extract_embeddings

        if self.test_rows is None:
            raise EvaluationError("this Evaluator has no test rows to embed")
        rows = np.asarray(self.test_rows.rows)
        shard = np.arange(len(rows))[self.dist.rank::self.dist.world_size]
        dataset = TestSequenceDataset(self.test_rows.cache, rows[shard], width=self.test_rows.width,
                                      max_frames=self.test_rows.max_frames)
        emb = extract_embeddings(model, dataset, batch_size=self.batch_size, device=self.device,
                                 amp=self.amp if self.amp is not None else False, num_workers=self.num_workers,
                                 progress=self.progress and self.dist.is_main)
        emb = np.asarray(emb.detach().float().cpu().numpy() if isinstance(emb, torch.Tensor) else emb,
                         dtype=np.float32)
        if self.dist.enabled:
            parts = dist_utils.all_gather_object((shard, emb))
            full = np.zeros((len(rows), *emb.shape[1:]), dtype=np.float32)
            for idx, e in parts:
                full[idx] = e
            emb = full
        return emb

    def evaluate_embeddings(self, embeddings: np.ndarray, subjects: Sequence[str], types: Sequence[str],
                            views: Sequence[str], checkpoint: str, split: str,
                            out_dirs: Sequence[str | os.PathLike] = (), step: int | None = None) -> EvalResult:
        """Score labelled embeddings, write the tables to each folder, print and log them.

        Args:
            embeddings: float (N, D) or (N, C, parts).
            subjects: (N,) subject ids.
            types: (N,) sequence types.
            views: (N,) view labels.
            checkpoint: The header's checkpoint line.
            split: The header's split line.
            out_dirs: Folders that each get every table (CSV + Markdown); the last one's files are logged.
            step: Training step of the metrics (None: 0).

        Returns:
            The tables, metrics (with the headline ``mean/rank1``, see :func:`headline_rank1`), files
            and header.

        Raises:
            EvaluationError: Unknown protocol or distance.
        """
        tables, metrics = run_protocol(self.protocol, embeddings, subjects, types, views, self.metric,
                                       self.same_view)
        from lstc_gait.evaluation.baselines import same_view_table

        same = same_view_table(tables)  # the diagonal the cross-view protocol leaves out
        if same is not None:
            metrics.update({f"{k}/same_view_rank1": float(v) for k, v in same["mean"].items()})
        roc = None
        if self.verification:
            from lstc_gait.evaluation.verification import plot_roc, protocol_verification

            verify, roc = protocol_verification(self.protocol, embeddings, subjects, types, views, self.metric)
            metrics = {**metrics, **verify}
        headline = headline_rank1(metrics, self.protocol)
        if headline is not None:
            metrics = {**metrics, HEADLINE_METRIC: headline}
        header = {**table_header(self.protocol, self.metric, checkpoint, split),
                  **same_view_header(self.protocol, self.same_view, views)}
        files: dict[str, list[Path]] = {}
        roc_file = None
        for out_dir in out_dirs:
            files = write_tables(tables, out_dir, header)
            if roc is not None:
                from lstc_gait.utils.fileio import atomic_output

                roc_file = Path(out_dir) / "roc.png"
                with atomic_output(roc_file) as tmp:
                    plot_roc({f"{self.protocol} probe x gallery": roc}, tmp, title=f"ROC ({self.metric})")
        if self.show:
            print("\n" + format_tables(tables, header, self.title) + "\n", flush=True)
        if self.tracker is not None:
            for name, table in tables.items():
                if name in files:
                    self.tracker.log_table(table, str(name).replace("/", "_"), files=tuple(files[name]), step=step)
                    if not str(name).startswith("crossview"):
                        # MLflow's compare view shows only files at the artifact root, side by side
                        # when every run has them: the per-view tables' Markdown goes there too.
                        self.tracker.log_artifact(files[name][1])
            self.tracker.log_metrics({f"test/{k}": float(v) for k, v in metrics.items()
                                      if v is not None and np.isfinite(float(v))}, step=step)
            if roc_file is not None and hasattr(self.tracker, "log_artifact"):
                self.tracker.log_artifact(roc_file, "verification")
        self.last = EvalResult(dict(tables), dict(metrics), files, header)
        return self.last

    def run(self, model: nn.Module, checkpoint: str, out_dirs: Sequence[str | os.PathLike] = (),
            step: int | None = None) -> EvalResult:
        """Embed :attr:`test_rows` with ``model`` and evaluate them (:meth:`evaluate_embeddings`).

        Args:
            model: The model (see :meth:`embed`).
            checkpoint: The header's checkpoint line.
            out_dirs: Folders for the tables.
            step: Training step of the metrics.

        Returns:
            The result (empty tables and metrics on ranks other than 0 under DDP).

        Raises:
            EvaluationError: No test rows were given.
        """
        t0 = time.perf_counter()
        emb = self.embed(model)
        if not self.dist.is_main:
            return EvalResult({}, {})
        labels = self.test_rows.labels()  # type: ignore[union-attr]
        result = self.evaluate_embeddings(emb, labels["subjects"], labels["types"], labels["views"], checkpoint,
                                          self.test_rows.split, out_dirs, step)  # type: ignore[union-attr]
        log.info("evaluation%s took %.1fs: %s", f" at step {step}" if step is not None else "",
                 time.perf_counter() - t0, ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items()
                                                    if k.endswith("rank1") or k == "mAP"))
        return result


class TrainingEvaluation:
    """The trainer's evaluation hook: ``hook(model, step) -> metrics``, tables under ``<run_dir>/tables``.

    Each evaluation writes ``tables/step_<step>/`` and refreshes ``tables/`` (the latest), whose files
    are logged.

    Args:
        evaluator: An :class:`Evaluator` with test rows.
        run_dir: The run's folder.
        weights: Which weights the trainer evaluates (``EMA`` or ``model``), for the header.
    """

    def __init__(self, evaluator: Evaluator, run_dir: str | os.PathLike, weights: str) -> None:
        self.evaluator = evaluator
        self.run_dir = Path(run_dir)
        self.weights = weights

    @property
    def tables(self) -> dict[str, Any]:
        """The latest evaluation's tables ({} before the first)."""
        return self.evaluator.last.tables if self.evaluator.last is not None else {}

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        """Evaluate ``model`` at ``step``.

        Args:
            model: The model to evaluate (EMA or raw, as the trainer chose).
            step: The training step.

        Returns:
            The metrics (without the ``test/`` prefix); {} on ranks other than 0.
        """
        tables = self.run_dir / "tables"
        return self.evaluator.run(model, f"{self.weights} weights at step {step}",
                                  (tables / f"step_{step:07d}", tables), step).metrics


__all__ = ["CASIA_B_CONDITIONS", "DISTANCES", "HEADLINE_METRIC", "PROTOCOL_NAMES", "EvalResult", "EvaluationError",
           "Evaluator", "TestRows", "TrainingEvaluation", "format_tables", "headline_rank1", "misses_policy",
           "run_protocol", "same_view_header", "table_header", "write_tables"]
