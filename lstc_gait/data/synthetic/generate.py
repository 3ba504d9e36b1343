"""SynthGait generation: parameters, one sequence, the raw CASIA-B tree, and the cached prepared instance.

Randomness is keyed, never sequential: subject traits come from ``(seed, subject)``, the walk of a
sequence type from ``(seed, subject, type)`` (every camera of a walk sees the same motion, as in
CASIA-B) and camera placement + segmentation noise from ``(seed, subject, type, view)``. So output
is byte-identical for a seed whatever the worker count or the subset generated.

Specification: /work/shared/docs/SYNTHGAIT.md; the output is CASIA-B's raw tree (Yu et al. 2006).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from lstc_gait.utils.locking import exclusive_lock

from .body import sample_subject, sample_walk, walk_rng
from .camera import Camera, place_walk, walker_to_world
from .pose import Body, G, build_body
from .render import NoiseLevels, render_frames

log = logging.getLogger(__name__)

# bump when the generator's output changes, so caches made by an older generator are not reused
GENERATOR_VERSION = 1

ALL_TYPES: tuple[str, ...] = ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06",
                              "bg-01", "bg-02", "cl-01", "cl-02")
ALL_VIEWS: tuple[str, ...] = tuple(f"{v:03d}" for v in range(0, 181, 18))
DEFAULT_VIEWS: tuple[str, ...] = ALL_VIEWS[::2]  # 000, 036, ..., 180: every other CASIA-B camera
DONE_FILE = "DONE.json"


@dataclass
class SynthParams:
    """Everything that determines a SynthGait instance (plain fields: usable as an OmegaConf structured config).

    ``SynthParams()`` is the default instance (see :meth:`default`).
    Subjects are numbered ``001``..``num_subjects``; the CASIA-B-style split puts the first
    ``round(num_subjects * 74 / 124)`` in train and the rest in test (see docs/synthetic.md), the
    ratio of CASIA-B's large-sample split (Yu et al. 2006; PROTOCOLS.md, "Splits").

    Attributes:
        num_subjects: Subjects, 1..999.
        types: Sequence types, a subset of :data:`ALL_TYPES` (CASIA-B's nm/bg/cl types).
        views: View angles as 3-digit strings, degrees.
        frames: Frames per sequence.
        seed: Seed of every random draw.
        width: Frame width, pixels (>= 32).
        height: Frame height, pixels (>= 32).
        fps: Frame rate, frames per second.
        distance_min: Nearest camera-to-walk distance drawn, metres.
        distance_max: Farthest, metres.
        noise_edge: Share of the silhouette edge made ragged.
        noise_hole: Per-frame probability of a hole in the body.
        noise_speck: Per-frame probability of background specks near the person.
        noise_shadow: Per-sequence probability of a ground shadow.
    """

    num_subjects: int = 24
    types: list[str] = field(default_factory=lambda: list(ALL_TYPES))
    views: list[str] = field(default_factory=lambda: list(DEFAULT_VIEWS))
    frames: int = 30
    seed: int = 0
    width: int = 320
    height: int = 240
    fps: float = 25.0
    distance_min: float = 4.0  # metres from the camera to the middle of the walk
    distance_max: float = 5.5
    noise_edge: float = 0.35  # share of the silhouette edge made ragged
    noise_hole: float = 0.06  # per-frame probability of a hole in the body
    noise_speck: float = 0.08  # per-frame probability of background specks near the person
    noise_shadow: float = 0.15  # per-sequence probability of a ground shadow

    # ---- named instances -------------------------------------------------------------------------------
    @classmethod
    def default(cls) -> SynthParams:
        """The main job's instance: 24 subjects (14 train / 10 test), 10 types, 6 views (000, 036, .., 180),
        30 frames of 320x240: 43,200 frames.

        Returns:
            ``SynthParams()``.
        """
        return cls()

    @classmethod
    def tiny(cls) -> SynthParams:
        """Tests and trainer=debug: 6 subjects (4 train / 2 test), 10 types, 3 views, 12 frames, 160x120.

        Returns:
            The tiny instance's parameters (views 000, 090, 180).
        """
        return cls(num_subjects=6, views=["000", "090", "180"], frames=12, width=160, height=120)

    @classmethod
    def casia_b(cls) -> SynthParams:
        """CASIA-B-sized: 124 subjects (74 train / 50 test), 10 types, 11 views, 30 frames: 409,200 frames.

        The size of CASIA-B (Yu et al. 2006).

        Returns:
            The CASIA-B-sized instance's parameters (every view of :data:`ALL_VIEWS`).
        """
        return cls(num_subjects=124, views=list(ALL_VIEWS))

    # ---- validation / identity ----------------------------------------------------------------------
    def validate(self) -> SynthParams:
        """Check every field.

        Returns:
            ``self``, unchanged.

        Raises:
            ValueError: A field is out of range (``num_subjects`` outside 1..999, ``frames`` < 1,
                a side < 32 pixels, ``fps`` <= 0, not ``0 < distance_min <= distance_max``),
                ``types`` or ``views`` is empty or repeats an entry, a type is not in
                :data:`ALL_TYPES`, or a view is not a 3-digit angle 000..359. The message names
                the field.
        """
        if self.num_subjects < 1 or self.num_subjects > 999:
            raise ValueError(f"SynthParams.num_subjects must be in 1..999, got {self.num_subjects}")
        if self.frames < 1:
            raise ValueError(f"SynthParams.frames must be >= 1, got {self.frames}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"SynthParams.width/height must be >= 32, got {self.width}x{self.height}")
        if not self.types or not self.views:
            raise ValueError("SynthParams.types and SynthParams.views must not be empty")
        bad = [t for t in self.types if t not in ALL_TYPES]
        if bad:
            raise ValueError(f"SynthParams.types: unknown type(s) {bad}; allowed: {list(ALL_TYPES)}")
        for v in self.views:
            if len(v) != 3 or not v.isdigit() or int(v) >= 360:
                raise ValueError(f"SynthParams.views: {v!r} is not a 3-digit angle 000..359")
        if len(set(self.types)) != len(self.types) or len(set(self.views)) != len(self.views):
            raise ValueError("SynthParams.types and SynthParams.views must not repeat entries")
        if not 0 < self.distance_min <= self.distance_max:
            raise ValueError("SynthParams needs 0 < distance_min <= distance_max")
        if self.fps <= 0:
            raise ValueError(f"SynthParams.fps must be > 0, got {self.fps}")
        return self

    @classmethod
    def from_mapping(cls, values: Mapping) -> SynthParams:
        """Build from a dict / OmegaConf DictConfig (missing keys keep their defaults).

        Args:
            values: Field values. Views given as ints (YAML reads an unquoted ``090`` as 90) are
                formatted as 3 digits; types are made strings.

        Returns:
            The validated parameters.

        Raises:
            ValueError: ``values`` has unknown keys (the message names them and the known ones),
                or the result fails :meth:`validate`.
            TypeError: ``views`` or ``types`` is not iterable.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SynthParams field(s) {unknown}; known: {sorted(known)}")
        kwargs = {}
        for k in values:
            v = values[k]
            if k == "views":  # YAML may read an unquoted 090 as the int 90
                v = [f"{x:03d}" if isinstance(x, int) and not isinstance(x, bool) else str(x) for x in v]
            elif k == "types":
                v = [str(x) for x in v]
            kwargs[k] = v
        return cls(**kwargs).validate()

    def to_dict(self) -> dict:
        """Every field as plain Python values (``types`` and ``views`` as lists).

        Returns:
            A new dict, one entry per field.
        """
        d = asdict(self)
        d["types"], d["views"] = list(self.types), list(self.views)
        return d

    def key(self) -> str:
        """Short hash of the parameters and the generator version: the instance's cache key.

        Returns:
            The first 10 hex digits of the SHA-1 of the sorted JSON of :meth:`to_dict` and
            :data:`GENERATOR_VERSION`.
        """
        blob = json.dumps({"generator": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def subjects(self) -> list[str]:
        """The subject ids.

        Returns:
            ``["001", ..., f"{num_subjects:03d}"]``.
        """
        return [f"{i:03d}" for i in range(1, self.num_subjects + 1)]

    def num_frames_total(self) -> int:
        """Frames in the whole raw tree.

        Returns:
            subjects x types x views x frames.
        """
        return self.num_subjects * len(self.types) * len(self.views) * self.frames


def casia_b_train_count(num_subjects: int) -> int:
    """Number of training subjects under the CASIA-B-ratio split (74 of 124).

    CASIA-B's large-sample training split (PROTOCOLS.md, "Splits"; Yu et al. 2006), scaled.

    Args:
        num_subjects: Subjects in the instance.

    Returns:
        ``round(num_subjects * 74 / 124)`` (Python's round: halves go to the even number).
    """
    return int(round(num_subjects * 74 / 124))


def _as_params(params: SynthParams | Mapping) -> SynthParams:
    if isinstance(params, SynthParams):
        return params.validate()
    if isinstance(params, Mapping) or hasattr(params, "keys"):
        return SynthParams.from_mapping(params)
    raise TypeError(f"params must be SynthParams or a mapping, got {type(params).__name__}")


# ---- one sequence -------------------------------------------------------------------------------------
def _camera_rng(seed: int, subject: int, type_index: int, view: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(entropy=int(seed), spawn_key=(2, subject, type_index, view)))


def _place(body: Body, origin: np.ndarray, head: np.ndarray) -> Body:
    out = Body()
    for c in body.capsules:
        out.capsules.append(type(c)(walker_to_world(c.p0, origin, head), walker_to_world(c.p1, origin, head),
                                    c.r0, c.r1))
    for h in body.hulls:
        out.hulls.append(type(h)(walker_to_world(h.points, origin, head)))
    out.feet = walker_to_world(body.feet, origin, head)
    return out


def generate_walk(params: SynthParams, subject: int, seq_type: str, views: Sequence[str]) -> dict[str, np.ndarray]:
    """Frames of one walk (subject, type) seen by each camera in ``views``.

    Body, motion, conditions, camera and noise follow SYNTHGAIT.md. Every view sees the same
    motion; camera placement and noise come from the view's own generator.

    Args:
        params: The instance's parameters (not validated here).
        subject: The subject's 1-based id.
        seq_type: One of :data:`ALL_TYPES`; its first two letters (``nm``, ``bg``, ``cl``) set
            the condition.
        views: View angles as strings of digits (degrees).

    Returns:
        ``{view: frames}`` with frames ``(T, H, W)`` uint8, 0/255, ``T = params.frames``,
        ``H, W = params.height, params.width``.

    Raises:
        ValueError: ``seq_type`` is not in :data:`ALL_TYPES`, or a view is not an integer string.
        RuntimeError: The kinematics table cannot be read.
    """
    traits = sample_subject(params.seed, subject)
    type_index = ALL_TYPES.index(seq_type)
    walk = sample_walk(walk_rng(params.seed, subject, type_index))
    times = (np.arange(params.frames) - 0.5 * (params.frames - 1)) / params.fps  # centred on the walk
    body = build_body(traits, walk, seq_type[:2], times)
    velocity = traits.speed * walk.speed * np.sqrt(G * traits.leg)
    path = velocity * params.frames / params.fps
    cam = Camera.for_image(params.width, params.height)
    noise = NoiseLevels(edge=params.noise_edge, hole=params.noise_hole, speck=params.noise_speck,
                        shadow=params.noise_shadow)
    out = {}
    for view in views:
        rng = _camera_rng(params.seed, subject, type_index, int(view))
        distance = rng.uniform(params.distance_min, params.distance_max)
        origin, head = place_walk(float(view), path, distance, cam, rng)
        out[view] = render_frames(_place(body, origin, head), cam, rng, noise)
    return out


# ---- raw tree -----------------------------------------------------------------------------------------
def sequence_dir(root: Path, subject: str, seq_type: str, view: str) -> Path:
    """Folder of one sequence in the raw CASIA-B tree.

    Args:
        root: The raw root.
        subject: 3-digit subject id.
        seq_type: Sequence type, e.g. ``nm-01``.
        view: 3-digit view angle.

    Returns:
        ``root/subject/seq_type/view``.
    """
    return Path(root) / subject / seq_type / view


def _write_sequence(root: Path, subject: str, seq_type: str, view: str, frames: np.ndarray) -> None:
    """Write one sequence's PNGs into a temporary folder, then move it into place (atomic per sequence)."""
    final = sequence_dir(root, subject, seq_type, view)
    tmp = final.parent / f".{view}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame, mode="L").save(tmp / f"{subject}-{seq_type}-{view}-{i:03d}.png",
                                              format="PNG", compress_level=1)
    if final.exists():  # a concurrent writer finished first: its output is identical
        shutil.rmtree(tmp)
        return
    # A whole folder is renamed into place, which utils.fileio (files only) does not do.
    os.replace(tmp, final)


def _walk_task(args: tuple) -> int:
    """Worker entry point (top level so spawn can import it): one walk, every missing view."""
    params_dict, root, subject, seq_type, views = args
    params = SynthParams(**params_dict)
    sub = f"{subject:03d}"
    walk = generate_walk(params, subject, seq_type, views)
    for view, frames in walk.items():
        _write_sequence(Path(root), sub, seq_type, view, frames)
    return sum(len(f) for f in walk.values())


def generate_raw(root: str | Path, params: SynthParams | Mapping, workers: int = 2, progress: bool = True,
                 subjects: Sequence[int] | None = None) -> int:
    """Write the raw CASIA-B tree ``ROOT/<sss>/<type>/<vvv>/<sss>-<type>-<vvv>-<fff>.png``.

    The layout of CASIA-B (Yu et al. 2006; PROTOCOLS.md), 0/255 grey PNGs. Each sequence folder
    appears at once (written aside, then renamed). Sequences already present are kept (an
    interrupted run resumes); leftovers of an interrupted run are removed first.

    Args:
        root: The raw root (created if missing).
        params: The parameters, or a mapping for :meth:`SynthParams.from_mapping`.
        workers: Worker processes (0 or 1: in this process).
        progress: Show a tqdm bar on stderr.
        subjects: 1-based subject ids to generate (all when None); each subject's data does not
            depend on the others.

    Returns:
        The number of frames written by this call.

    Raises:
        ValueError: Invalid parameters (see :meth:`SynthParams.validate`), or a subject outside
            1..num_subjects.
        TypeError: ``params`` is neither SynthParams nor a mapping.
        OSError: The tree cannot be written.
    """
    params = _as_params(params)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # leftovers of an interrupted run (one writer per root; ensure_synthetic holds a lock)
    for stale in root.glob("*/*/.*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    ids = list(range(1, params.num_subjects + 1)) if subjects is None else [int(s) for s in subjects]
    bad = [s for s in ids if not 1 <= s <= params.num_subjects]
    if bad:
        raise ValueError(f"subjects {bad} outside 1..{params.num_subjects}")
    tasks = []
    for s in ids:
        for t in params.types:
            todo = [v for v in params.views if not sequence_dir(root, f"{s:03d}", t, v).is_dir()]
            if todo:
                tasks.append((params.to_dict(), str(root), s, t, todo))
    total = sum(len(task[4]) for task in tasks) * params.frames
    written = 0
    with _progress(total, "SynthGait frames", progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                n = _walk_task(task)
                written += n
                bar.update(n)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
                futures = [pool.submit(_walk_task, task) for task in tasks]
                for fut in as_completed(futures):
                    n = fut.result()
                    written += n
                    bar.update(n)
    return written


def _mp_context():
    """Fork where the platform has it: spawned workers would re-import ``lstc_gait.data`` (and torch,
    seconds per worker). The workers only run numpy/Pillow, and their output depends on their
    arguments alone, so the start method never changes the frames. Elsewhere: spawn."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", disable=not enabled, file=sys.stderr, smoothing=0.1)
    try:
        yield bar
    finally:
        bar.close()


# ---- cached, prepared instance ------------------------------------------------------------------------
def instance_dir(params: SynthParams | Mapping, data_dir: str | Path) -> Path:
    """Folder of one instance under ``data_dir``.

    Args:
        params: The parameters, or a mapping for :meth:`SynthParams.from_mapping`.
        data_dir: The data folder.

    Returns:
        ``data_dir/synthgait-<params.key()>`` (not created).

    Raises:
        ValueError: Invalid parameters.
        TypeError: ``params`` is neither SynthParams nor a mapping.
    """
    return Path(data_dir) / f"synthgait-{_as_params(params).key()}"


def _read_done(folder: Path) -> dict | None:
    try:
        return json.loads((folder / DONE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_synthetic(params: SynthParams | Mapping, data_dir: str | Path, workers: int = 2,
                     progress: bool = True, min_frames: int | None = None) -> Path:
    """Generate (once) and prepare a SynthGait instance; returns its prepared cache directory.

    Layout: ``data_dir/synthgait-<key>/{raw, cache, params.json, DONE.json}``. DONE.json is written
    last and atomically; when present the cache dir is returned at once. An interrupted run resumes
    (finished sequences and prepared entries are kept). Concurrent calls for one instance run one
    after the other (a lock file in ``data_dir``).

    Args:
        params: The parameters, or a mapping for :meth:`SynthParams.from_mapping`.
        data_dir: The data folder (created if missing).
        workers: Worker processes for generation and preparation.
        progress: Show progress bars on stderr.
        min_frames: Passed to :func:`lstc_gait.data.prepare.prepare_cache` (its default when None).

    Returns:
        ``data_dir/synthgait-<key>/cache``, a finished cache.

    Raises:
        ValueError: Invalid parameters.
        TypeError: ``params`` is neither SynthParams nor a mapping.
        EmptyCacheError: Preparation kept no sequence (e.g. ``min_frames`` above ``frames``).
        OSError: The data folder cannot be written.
    """
    params = _as_params(params)
    folder = instance_dir(params, data_dir)
    cache_dir = folder / "cache"
    if _read_done(folder) is not None and cache_dir.is_dir():
        return cache_dir
    with exclusive_lock(Path(data_dir) / f".synthgait-{params.key()}.lock"):
        if _read_done(folder) is not None and cache_dir.is_dir():
            return cache_dir
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / "params.json", json.dumps(
            {"generator": GENERATOR_VERSION, **params.to_dict()}, indent=2, sort_keys=True))
        t0 = time.perf_counter()
        n = generate_raw(folder / "raw", params, workers=workers, progress=progress)
        t1 = time.perf_counter()
        prepare_cache = _prepare_cache_fn()
        extra = {} if min_frames is None else {"min_frames": min_frames}
        summary = prepare_cache([folder / "raw"], "casia_b", cache_dir, workers=workers, progress=progress,
                                **extra)
        t2 = time.perf_counter()
        done = {"key": params.key(), "frames_generated": n, "generate_seconds": round(t1 - t0, 3),
                "prepare_seconds": round(t2 - t1, 3), "summary": _summary_dict(summary)}
        _atomic_write(folder / DONE_FILE, json.dumps(done, indent=2, default=str))
        log.info("SynthGait %s ready in %s (%.1f s generate, %.1f s prepare)", params.key(), folder,
                 t1 - t0, t2 - t1)
    return cache_dir


def _prepare_cache_fn():
    try:
        from lstc_gait.data import prepare_cache
    except ImportError:
        from lstc_gait.data.prepare import prepare_cache
    return prepare_cache


def _summary_dict(summary) -> dict | str:
    if hasattr(summary, "__dataclass_fields__"):
        return {k: v for k, v in asdict(summary).items() if isinstance(v, (int, float, str, bool))}
    return str(summary)


def _atomic_write(path: Path, text: str) -> None:
    from lstc_gait.utils.fileio import atomic_write_text

    atomic_write_text(path, text)
